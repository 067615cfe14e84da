//! The small part of tar this format uses: 512-byte GNU headers of regular
//! files, zero padding, and the two zero blocks at the end. Headers are built
//! and parsed with the `tar` crate's `Header`; the stream around them is
//! walked here, so that every byte read is bounded by a size known in advance.

use std::io::{self, Read, Write};

use crate::format::{ENTRY_MODE, TAR_BLOCK};

/// Builds the header of a regular file entry.
pub(crate) fn header(name: &str, size: u64, mtime: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(ENTRY_MODE);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Zero bytes that pad `size` up to a whole block.
pub(crate) fn padding(size: u64) -> u64 {
    (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK
}

/// Writes zero padding after `size` bytes of data.
pub(crate) fn write_padding(w: &mut impl Write, size: u64) -> io::Result<()> {
    let pad = padding(size) as usize;
    w.write_all(&[0u8; TAR_BLOCK as usize][..pad])
}

/// What a raw header block says.
#[derive(Debug)]
pub(crate) enum Block {
    /// An all-zero block (end of archive).
    Zero,
    /// A header.
    Header(Box<tar::Header>),
}

/// Why a header block was refused.
#[derive(Debug)]
pub(crate) enum HeaderProblem {
    /// Checksum does not match.
    Checksum,
    /// The stream ended inside the block (`n` bytes read).
    Truncated,
}

/// Reads one 512-byte block and checks its header checksum.
pub(crate) fn read_block(r: &mut impl Read) -> io::Result<Result<Block, HeaderProblem>> {
    let mut buf = [0u8; TAR_BLOCK as usize];
    if read_full(r, &mut buf)? < buf.len() {
        return Ok(Err(HeaderProblem::Truncated));
    }
    if buf.iter().all(|&b| b == 0) {
        return Ok(Ok(Block::Zero));
    }
    let header = tar::Header::from_byte_slice(&buf).clone();
    // The checksum is the sum of all header bytes with the checksum field
    // (bytes 148..156) counted as spaces.
    let sum: u32 = buf
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    match header.cksum() {
        Ok(c) if c == sum => Ok(Ok(Block::Header(Box::new(header)))),
        _ => Ok(Err(HeaderProblem::Checksum)),
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
