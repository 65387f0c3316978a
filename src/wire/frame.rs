//! Frames: a big-endian `u32` length, then a postcard-encoded [`Envelope`].
//!
//! The length is checked against [`MAX_FRAME`] before a byte of the payload is
//! allocated, and a payload must decode to exactly one envelope with nothing
//! left over. Every way a frame can be wrong has its own [`FrameError`], so the
//! connection that sent it is closed with a reason a person can read.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Envelope;

/// The largest payload we accept or send: 1 MiB. The largest message we send is
/// a cache flush; at about 30 bytes an entry this is room for over 30 000
/// requests, far above any flush size the config allows.
pub const MAX_FRAME: u32 = 1 << 20;

/// How a frame can fail to arrive.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame truncated: connection closed after {got} of {want} bytes")]
    Truncated { got: usize, want: usize },
    #[error("frame of {len} bytes is over the limit of {MAX_FRAME} bytes")]
    TooLarge { len: u32 },
    #[error("empty frame")]
    Empty,
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("malformed frame: {extra} bytes after the message")]
    TrailingBytes { extra: usize },
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Encodes an envelope as one frame (length prefix included).
pub fn encode(env: &Envelope) -> Result<Vec<u8>, FrameError> {
    let mut buf = postcard::to_extend(env, vec![0u8; 4])?;
    let len = buf.len() - 4;
    if len > MAX_FRAME as usize {
        return Err(FrameError::TooLarge { len: len as u32 });
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Decodes one frame's payload (without its length prefix).
pub fn decode(payload: &[u8]) -> Result<Envelope, FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    let (env, rest) = postcard::take_from_bytes::<Envelope>(payload)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes { extra: rest.len() });
    }
    Ok(env)
}

/// Writes one envelope as a frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    env: &Envelope,
) -> Result<(), FrameError> {
    let buf = encode(env)?;
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads the next frame's length prefix. `Closed` if the peer closed cleanly
/// between frames.
pub async fn read_len<R: AsyncRead + Unpin>(r: &mut R) -> Result<u32, FrameError> {
    let mut len = [0u8; 4];
    let got = read_full(r, &mut len).await?;
    match got {
        0 => Err(FrameError::Closed),
        4 => {
            let len = u32::from_be_bytes(len);
            if len > MAX_FRAME {
                Err(FrameError::TooLarge { len })
            } else {
                Ok(len)
            }
        }
        got => Err(FrameError::Truncated { got, want: 4 }),
    }
}

/// Reads a payload of `len` bytes (as announced by [`read_len`]) and decodes it.
pub async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    len: u32,
) -> Result<Envelope, FrameError> {
    let mut payload = vec![0u8; len as usize];
    let got = read_full(r, &mut payload).await?;
    if got < payload.len() {
        return Err(FrameError::Truncated {
            got,
            want: payload.len(),
        });
    }
    decode(&payload)
}

/// Reads one whole frame.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Envelope, FrameError> {
    let len = read_len(r).await?;
    read_payload(r, len).await
}

/// Fills `buf` unless the stream ends first; returns how many bytes were read.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Lamport;
    use crate::wire::{Body, NodeId, Order, ProductId, Qty, RequestId};

    fn buy() -> Envelope {
        Envelope {
            from: NodeId(2),
            clock: Lamport(41),
            body: Body::Buy(Order {
                id: RequestId {
                    node: NodeId(2),
                    seq: 9,
                },
                product: ProductId(0),
                qty: Qty(3),
            }),
        }
    }

    #[tokio::test]
    async fn a_frame_round_trips() {
        let bytes = encode(&buy()).unwrap();
        let mut r = &bytes[..];
        assert_eq!(read_frame(&mut r).await.unwrap(), buy());
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_allocating() {
        let bytes = u32::MAX.to_be_bytes();
        let mut r = &bytes[..];
        assert!(matches!(
            read_frame(&mut r).await,
            Err(FrameError::TooLarge { len: u32::MAX })
        ));
    }

    #[tokio::test]
    async fn truncated_frames_are_named() {
        let bytes = encode(&buy()).unwrap();
        let mut r = &bytes[..2];
        assert!(matches!(
            read_frame(&mut r).await,
            Err(FrameError::Truncated { got: 2, want: 4 })
        ));
        let mut r = &bytes[..bytes.len() - 1];
        assert!(matches!(
            read_frame(&mut r).await,
            Err(FrameError::Truncated { .. })
        ));
    }

    #[tokio::test]
    async fn garbage_and_trailing_bytes_are_malformed() {
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut &garbage[..]).await,
            Err(FrameError::Malformed(_))
        ));
        let mut bytes = encode(&buy()).unwrap();
        bytes.push(0);
        let len = (bytes.len() - 4) as u32;
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            read_frame(&mut &bytes[..]).await,
            Err(FrameError::TrailingBytes { extra: 1 })
        ));
        let empty = [0, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut &empty[..]).await,
            Err(FrameError::Empty)
        ));
    }
}
