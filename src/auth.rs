//! The closed door: only nodes holding the market's key get in.
//!
//! With `[network] key` (or `key_file`) set, every connection opens with a
//! keyed hello before the protocol's own hello ([`crate::connection`]): a
//! mutual challenge-response with a fresh nonce from each side, then every
//! byte after it travels in records bound to that hello.
//!
//! ```text
//! caller   → listener   MAGIC, nonce_c                      (40 bytes)
//! listener → caller     MAGIC, nonce_s, proof_s             (72 bytes)
//! caller   → listener   proof_c                             (32 bytes)
//! proof_s = HMAC-SHA256(key, "bazaar listener" ‖ nonce_c ‖ nonce_s)
//! proof_c = HMAC-SHA256(key, "bazaar caller"   ‖ nonce_c ‖ nonce_s)
//! ```
//!
//! The caller checks `proof_s` before it proves anything itself (a listener
//! without the key learns nothing it can use); the listener checks `proof_c`
//! against the nonce it has just drawn, so a hello recorded on another
//! connection and sent again fails: its proof answers another challenge. A
//! refused hello is logged with the caller's address and why, and the
//! connection is closed before a single frame of the protocol is read.
//!
//! After the hello each direction has its own session key,
//! `HMAC(key, "caller to listener" | "listener to caller" ‖ nonce_c ‖ nonce_s)`,
//! and every chunk of bytes goes as a record `len (u32 BE) ‖ bytes ‖ tag`
//! with `tag = HMAC(session key, seq ‖ len ‖ bytes)` truncated to 16 bytes,
//! `seq` counting the records of that direction. A record that was altered,
//! dropped, reordered, replayed from another connection or sent by anyone
//! who did not make the hello fails its tag and closes the connection. The
//! records are authenticated, not encrypted: the market's traffic is not
//! secret, its authorship is.
//!
//! Why HMAC and not TLS: the market is one shared secret among its own
//! nodes, not a public-key infrastructure; HMAC-SHA256 from the RustCrypto
//! `hmac`/`sha2` crates needs no certificates, no clock and no new build
//! dependencies beyond two small, widely used crates, and the handshake is
//! short enough to read whole here. The layer is a [`Transport`] wrapper, so
//! the protocol code above it (hello, writers, readers) is unchanged and
//! every transport (TCP, the fault layer of [`crate::net`]) gets it.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

use crate::net::{BoxFuture, BoxStream, Listener, Transport};

type HmacSha256 = Hmac<Sha256>;

/// The keyed hello's first bytes. Read as a frame length by a node without
/// a key, `BZKE` is far over the frame limit, so it refuses at once.
pub const MAGIC: [u8; 8] = *b"BZKEYv1\0";
/// A nonce: 32 bytes from the operating system's random source.
pub type Nonce = [u8; 32];
/// A proof: an HMAC-SHA256 output.
pub type Proof = [u8; 32];
/// The bytes of a record's tag (truncated HMAC-SHA256: 128 bits).
pub const TAG: usize = 16;
/// The largest record's payload: what one read of the stream hands over.
pub const MAX_RECORD: usize = 16 * 1024;
/// The shortest secret accepted: 16 bytes (128 bits if random).
pub const MIN_KEY: usize = 16;
/// How long the keyed hello may take, both sides.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Keyed hellos the listener runs at once; beyond this, new callers wait
/// in the kernel's backlog (a flood of slow hellos cannot take the node's
/// memory).
const HELLOS_AT_ONCE: usize = 64;

/// The market's shared secret.
#[derive(Clone)]
pub struct Key(Arc<[u8]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

impl Key {
    /// A key from a secret string (at least [`MIN_KEY`] bytes).
    pub fn from_secret(secret: &str) -> Result<Key, String> {
        let s = secret.trim();
        if s.len() < MIN_KEY {
            return Err(format!(
                "[network] key is {} bytes; give at least {MIN_KEY} (e.g. `openssl rand -hex 32`)",
                s.len()
            ));
        }
        Ok(Key(s.as_bytes().into()))
    }

    /// A key from a file's contents (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Key, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("cannot read [network] key_file {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&text);
        Key::from_secret(&text).map_err(|e| format!("{} ({})", e, path.display()))
    }

    /// A fresh random key, as 64 hex digits (what `bazaar run` makes per run).
    pub fn generate() -> io::Result<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(io::Error::other)?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn mac(&self, label: &[u8], nc: &Nonce, ns: &Nonce) -> [u8; 32] {
        mac(&self.0, &[label, nc, ns])
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Compares two byte strings in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn fresh_nonce() -> io::Result<Nonce> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(io::Error::other)?;
    Ok(n)
}

/// The listener's proof for a hello with nonces `nc`, `ns`.
pub fn listener_proof(key: &Key, nc: &Nonce, ns: &Nonce) -> Proof {
    key.mac(b"bazaar listener", nc, ns)
}

/// The caller's proof for a hello with nonces `nc`, `ns`.
pub fn caller_proof(key: &Key, nc: &Nonce, ns: &Nonce) -> Proof {
    key.mac(b"bazaar caller", nc, ns)
}

/// One direction of a connection after the hello: its session key and the
/// number of the next record. Pure: seals and opens byte strings.
pub struct Seal {
    key: [u8; 32],
    seq: u64,
}

/// Which way a [`Seal`] carries records.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Direction {
    CallerToListener,
    ListenerToCaller,
}

impl Seal {
    pub fn new(key: &Key, nc: &Nonce, ns: &Nonce, dir: Direction) -> Seal {
        let label: &[u8] = match dir {
            Direction::CallerToListener => b"caller to listener",
            Direction::ListenerToCaller => b"listener to caller",
        };
        Seal {
            key: key.mac(label, nc, ns),
            seq: 0,
        }
    }

    fn tag_of(&self, data: &[u8]) -> [u8; TAG] {
        let full = mac(
            &self.key,
            &[
                &self.seq.to_be_bytes(),
                &(data.len() as u32).to_be_bytes(),
                data,
            ],
        );
        let mut t = [0u8; TAG];
        t.copy_from_slice(&full[..TAG]);
        t
    }

    /// The record carrying `data` (at most [`MAX_RECORD`] bytes).
    pub fn seal(&mut self, data: &[u8]) -> Vec<u8> {
        debug_assert!(data.len() <= MAX_RECORD);
        let mut rec = Vec::with_capacity(4 + data.len() + TAG);
        rec.extend_from_slice(&(data.len() as u32).to_be_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&self.tag_of(data));
        self.seq += 1;
        rec
    }

    /// Checks `tag` on the next record's `data`.
    pub fn open(&mut self, data: &[u8], tag: &[u8]) -> Result<(), String> {
        if !same(&self.tag_of(data), tag) {
            return Err(format!(
                "record {} failed its check (altered, replayed, or not from the peer of the hello)",
                self.seq
            ));
        }
        self.seq += 1;
        Ok(())
    }
}

async fn read_exact_or<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    what: &str,
) -> Result<(), String> {
    r.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => format!("closed before its {what}"),
            _ => format!("while reading its {what}: {e}"),
        })
}

/// The caller's side of the keyed hello; returns the two seals (send, receive).
pub async fn caller_hello<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: &Key,
) -> Result<(Seal, Seal), String> {
    let nc = fresh_nonce().map_err(|e| e.to_string())?;
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&nc);
    s.write_all(&hello).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut answer = [0u8; 8 + 32 + 32];
    read_exact_or(
        s,
        &mut answer,
        "answer to the keyed hello (does the listener have [network] key?)",
    )
    .await?;
    if answer[..8] != MAGIC {
        return Err(
            "the listener did not answer the keyed hello (it has no [network] key?)".into(),
        );
    }
    let mut ns = [0u8; 32];
    ns.copy_from_slice(&answer[8..40]);
    if !same(&listener_proof(key, &nc, &ns), &answer[40..]) {
        return Err("the listener does not hold this market's key".into());
    }
    s.write_all(&caller_proof(key, &nc, &ns))
        .await
        .map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    Ok((
        Seal::new(key, &nc, &ns, Direction::CallerToListener),
        Seal::new(key, &nc, &ns, Direction::ListenerToCaller),
    ))
}

/// The listener's side of the keyed hello; returns the two seals (send, receive).
pub async fn listener_hello<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: &Key,
) -> Result<(Seal, Seal), String> {
    // The first four bytes tell a keyed hello from the protocol's own (a
    // frame length): a node without the key is refused at once, not after
    // a timeout.
    let mut hello = [0u8; 8 + 32];
    read_exact_or(s, &mut hello[..4], "keyed hello").await?;
    if hello[..4] != MAGIC[..4] {
        return Err(
            "it did not open with the keyed hello (a node without this market's [network] key?)"
                .into(),
        );
    }
    read_exact_or(s, &mut hello[4..], "keyed hello").await?;
    if hello[..8] != MAGIC {
        return Err("it did not open with the keyed hello (another version?)".into());
    }
    let mut nc = [0u8; 32];
    nc.copy_from_slice(&hello[8..]);
    let ns = fresh_nonce().map_err(|e| e.to_string())?;
    let mut answer = MAGIC.to_vec();
    answer.extend_from_slice(&ns);
    answer.extend_from_slice(&listener_proof(key, &nc, &ns));
    s.write_all(&answer).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut proof = [0u8; 32];
    read_exact_or(
        s,
        &mut proof,
        "proof (a caller with another key stops here)",
    )
    .await?;
    if !same(&caller_proof(key, &nc, &ns), &proof) {
        return Err(
            "its proof is wrong: another key, or a hello replayed from an earlier connection"
                .into(),
        );
    }
    Ok((
        Seal::new(key, &nc, &ns, Direction::ListenerToCaller),
        Seal::new(key, &nc, &ns, Direction::CallerToListener),
    ))
}

/// A stream under the two seals of its hello: what is written goes out as
/// records, what arrives is opened record by record. No task and no copy
/// beyond the record itself: it seals in `poll_write` and opens in
/// `poll_read`. A record that fails its check is an error (logged, naming
/// `peer`) and ends the stream.
struct Sealed {
    inner: BoxStream,
    send: Seal,
    recv: Seal,
    peer: SocketAddr,
    /// The record being written, and how much of it has gone.
    out: Vec<u8>,
    sent: usize,
    /// Bytes read, not yet a whole record.
    raw: Vec<u8>,
    /// The opened record being read, and how much of it was handed on.
    plain: Vec<u8>,
    given: usize,
    broken: bool,
}

fn sealed(inner: BoxStream, send: Seal, recv: Seal, peer: SocketAddr) -> BoxStream {
    Box::new(Sealed {
        inner,
        send,
        recv,
        peer,
        out: Vec::new(),
        sent: 0,
        raw: Vec::new(),
        plain: Vec::new(),
        given: 0,
        broken: false,
    })
}

impl Sealed {
    /// Writes out what is left of the record being written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn fail(&mut self, why: String) -> io::Error {
        tracing::warn!(peer = %self.peer, "closed keyed connection: {why}");
        self.broken = true;
        io::Error::new(io::ErrorKind::InvalidData, why)
    }
}

impl AsyncWrite for Sealed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        let n = buf.len().min(MAX_RECORD);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        this.out = this.send.seal(&buf[..n]);
        // Taken: the record goes out now as far as it can, the rest on the
        // next write or flush.
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for Sealed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.given < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.given);
                buf.put_slice(&this.plain[this.given..this.given + n]);
                this.given += n;
                return Poll::Ready(Ok(()));
            }
            if this.broken {
                return Poll::Ready(Err(io::ErrorKind::InvalidData.into()));
            }
            if this.raw.len() >= 4 {
                let len = u32::from_be_bytes([this.raw[0], this.raw[1], this.raw[2], this.raw[3]])
                    as usize;
                if len > MAX_RECORD {
                    let e = this.fail(format!("record of {len} bytes is over {MAX_RECORD}"));
                    return Poll::Ready(Err(e));
                }
                let whole = 4 + len + TAG;
                if this.raw.len() >= whole {
                    let (data, tag) = this.raw[4..whole].split_at(len);
                    if let Err(why) = this.recv.open(data, tag) {
                        let e = this.fail(why);
                        return Poll::Ready(Err(e));
                    }
                    this.plain.clear();
                    this.plain.extend_from_slice(data);
                    this.given = 0;
                    this.raw.drain(..whole);
                    continue;
                }
            }
            let mut chunk = [0u8; 8 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                // The end: clean between records, else cut short.
                return Poll::Ready(if this.raw.is_empty() {
                    Ok(())
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                });
            }
            this.raw.extend_from_slice(rb.filled());
        }
    }
}

/// A transport whose every connection opens with the keyed hello and whose
/// bytes travel in sealed records (see the module docs).
pub struct Keyed {
    inner: Arc<dyn Transport>,
    key: Key,
}

impl Keyed {
    pub fn over(inner: Arc<dyn Transport>, key: Key) -> Arc<dyn Transport> {
        Arc::new(Keyed { inner, key })
    }
}

struct KeyedListener {
    addr: SocketAddr,
    accepted: mpsc::Receiver<(BoxStream, SocketAddr)>,
}

impl Listener for KeyedListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            self.accepted
                .recv()
                .await
                .ok_or_else(|| io::Error::other("the keyed listener stopped"))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

impl Transport for Keyed {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let mut inner = self.inner.bind(addr).await?;
            let addr = inner.local_addr()?;
            let (tx, rx) = mpsc::channel(HELLOS_AT_ONCE);
            let key = self.key.clone();
            let hellos = Arc::new(tokio::sync::Semaphore::new(HELLOS_AT_ONCE));
            // Accepts, and runs each keyed hello on its own task so a slow
            // caller holds up nobody; hands on only the callers that passed.
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        r = inner.accept() => r,
                        _ = tx.closed() => return,
                    };
                    let (mut stream, from) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = hellos.clone().acquire_owned().await else {
                        return;
                    };
                    let (tx, key) = (tx.clone(), key.clone());
                    tokio::spawn(async move {
                        let hello =
                            tokio::time::timeout(HELLO_TIMEOUT, listener_hello(&mut stream, &key))
                                .await
                                .unwrap_or_else(|_| {
                                    Err(format!("no keyed hello within {HELLO_TIMEOUT:?}"))
                                });
                        drop(permit);
                        match hello {
                            Ok((send, recv)) => {
                                let _ = tx.send((sealed(stream, send, recv, from), from)).await;
                            }
                            Err(why) => tracing::warn!(%from, "refused at the hello: {why}"),
                        }
                    });
                }
            });
            Ok(Box::new(KeyedListener { addr, accepted: rx }) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let mut stream = self.inner.connect(addr).await?;
            let (send, recv) =
                tokio::time::timeout(HELLO_TIMEOUT, caller_hello(&mut stream, &self.key))
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no answer to the keyed hello within {HELLO_TIMEOUT:?}"),
                        )
                    })?
                    .map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why))?;
            Ok(sealed(stream, send, recv, addr))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        Key::from_secret(s).unwrap()
    }

    #[test]
    fn short_secrets_are_refused_with_the_fix() {
        let e = Key::from_secret("hunter2").unwrap_err();
        assert!(e.contains("at least 16"), "{e}");
        assert!(Key::generate().unwrap().len() == 64);
        assert_ne!(Key::generate().unwrap(), Key::generate().unwrap());
    }

    #[test]
    fn proofs_depend_on_the_key_the_nonces_and_the_side() {
        let (k, other) = (key("0123456789abcdef"), key("0123456789abcdeX"));
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(caller_proof(&k, &a, &b), caller_proof(&k, &a, &b));
        assert_ne!(caller_proof(&k, &a, &b), caller_proof(&other, &a, &b));
        assert_ne!(
            caller_proof(&k, &a, &b),
            caller_proof(&k, &a, &a),
            "a fresh nonce"
        );
        assert_ne!(
            caller_proof(&k, &a, &b),
            listener_proof(&k, &a, &b),
            "no reflection"
        );
    }

    #[test]
    fn a_record_opens_once_in_order_and_only_unaltered() {
        let k = key("0123456789abcdef");
        let (nc, ns) = ([1u8; 32], [2u8; 32]);
        let mut tx = Seal::new(&k, &nc, &ns, Direction::CallerToListener);
        let mut rx = Seal::new(&k, &nc, &ns, Direction::CallerToListener);
        let r1 = tx.seal(b"first");
        let r2 = tx.seal(b"second");
        let split = |r: &[u8]| (r[4..r.len() - TAG].to_vec(), r[r.len() - TAG..].to_vec());
        let (d2, t2) = split(&r2);
        assert!(rx.open(&d2, &t2).is_err(), "out of order");
        let (d1, t1) = split(&r1);
        rx.open(&d1, &t1).unwrap();
        assert!(rx.open(&d1, &t1).is_err(), "replayed");
        let mut bad = d2.clone();
        bad[0] ^= 1;
        assert!(rx.open(&bad, &t2).is_err(), "altered");
        rx.open(&d2, &t2).unwrap();
        // The other direction's seal, or another hello's, opens nothing.
        let mut back = Seal::new(&k, &nc, &ns, Direction::ListenerToCaller);
        assert!(back.open(&d1, &t1).is_err());
        let mut other = Seal::new(&k, &nc, &[3u8; 32], Direction::CallerToListener);
        assert!(other.open(&d1, &t1).is_err());
    }

    #[tokio::test]
    async fn both_sides_agree_with_one_key_and_not_with_two() {
        let k = key("0123456789abcdef");
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (c, l) = tokio::join!(caller_hello(&mut a, &k), listener_hello(&mut b, &k));
        let ((mut cs, _), (_, mut lr)) = (c.unwrap(), l.unwrap());
        let r = cs.seal(b"hi");
        lr.open(&r[4..6], &r[6..]).unwrap();

        let (mut a, mut b) = tokio::io::duplex(1024);
        let other = key("another key, long enough");
        let (c, l) = tokio::join!(
            async move {
                let r = caller_hello(&mut a, &other).await;
                drop(a); // the caller hangs up
                r
            },
            listener_hello(&mut b, &k)
        );
        assert!(c.err().unwrap().contains("does not hold"));
        assert!(l.is_err());
    }
}
