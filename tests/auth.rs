//! The closed door: a warehouse with `[network] key` lets in only callers
//! that hold the key. A caller without it, with a wrong key, or replaying a
//! hello recorded from a real keyed connection is refused at the hello, the
//! refusal is logged, and the books do not change; a caller with the key
//! trades (the control that shows the door is not simply shut).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazaar::auth::{Keyed, MAGIC};
use bazaar::clock::{Clock, Lamport};
use bazaar::config::Config;
use bazaar::link::Link;
use bazaar::membership::Membership;
use bazaar::net::{Tcp, Transport};
use bazaar::node::{AddressBook, IoMode, NodeContext, ServeOptions};
use bazaar::wire::frame::encode;
use bazaar::wire::{
    Body, Envelope, Epoch, NodeId, Order, PROTOCOL_VERSION, ProductId, Qty, RequestId,
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const KEY: &str = "the market's own key, 32 bytes..";
const MARKET: &str = "[market]\npeers = 2\ntraders = 1\n[roles]\nbuyers = 1\nsellers = 0\n[network]\nkey = \"the market's own key, 32 bytes..\"\n";

/// What the nodes log, for the refusals.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn keyed(secret: &str) -> Arc<dyn Transport> {
    Keyed::over(
        Tcp::shared(),
        bazaar::auth::Key::from_secret(secret).unwrap(),
    )
}

/// The warehouse of `cfg` in this process, behind its key.
async fn keyed_warehouse(cfg: &Config, dir: &std::path::Path) -> (SocketAddr, CancellationToken) {
    let key = cfg
        .network
        .key()
        .unwrap()
        .expect("the test market has a key");
    let transport = Keyed::over(Tcp::shared(), key);
    let listener = transport
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    seat_first_view(cfg, dir);
    let mut ctx = NodeContext::new(
        NodeId::WAREHOUSE,
        cfg.role_of(NodeId::WAREHOUSE).unwrap(),
        Arc::new(cfg.clone()),
        AddressBook::default(),
        transport,
        IoMode::Threaded,
        dir.to_path_buf(),
        dir.join("history"),
    )
    .unwrap();
    ctx.traders = Arc::new(Membership::with_view(NodeId::WAREHOUSE, first_view(cfg)));
    let stop = CancellationToken::new();
    tokio::spawn(bazaar::role::run(
        ctx,
        listener,
        ServeOptions::default(),
        stop.clone(),
        stop.clone(),
        || {},
    ));
    (addr, stop)
}

fn forged_sell(seq: u64) -> Vec<u8> {
    encode(&Envelope {
        from: NodeId(2),
        clock: Lamport(1),
        body: Body::WarehouseSell {
            epoch: Epoch(1),
            order: Order {
                id: RequestId {
                    node: NodeId(2),
                    seq,
                },
                product: ProductId(0),
                qty: Qty(1000),
            },
        },
    })
    .unwrap()
}

fn plain_hello() -> Vec<u8> {
    encode(&Envelope {
        from: NodeId(2),
        clock: Lamport(1),
        body: Body::Hello {
            version: PROTOCOL_VERSION,
        },
    })
    .unwrap()
}

/// Everything the server sends until it closes (fails if it stays open).
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut got))
        .await
        .expect("the warehouse kept a refused connection open")
        .ok();
    got
}

/// A relay from a port of its own to `to` that records what the caller sent.
async fn recording_relay(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let rec = sent.clone();
    tokio::spawn(async move {
        let (caller, _) = l.accept().await.unwrap();
        let server = TcpStream::connect(to).await.unwrap();
        let (mut cr, mut cw) = caller.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
        let mut buf = [0u8; 4096];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            rec.lock().unwrap().extend_from_slice(&buf[..n]);
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    (addr, sent)
}

#[test]
fn only_the_markets_own_nodes_get_in() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml(MARKET).unwrap();
        let (addr, stop) = keyed_warehouse(&cfg, dir.path()).await;
        let clock = Arc::new(Clock::new());
        let trader = |t: Arc<dyn Transport>, to| {
            Link::new(NodeId(2), NodeId::WAREHOUSE, to, t, clock.clone())
        };

        // The control: the key opens the door, through a relay that records
        // the caller's bytes (the hello, then a sell sealed to it).
        let (relay, recorded) = recording_relay(addr).await;
        let honest = trader(keyed(KEY), relay);
        let before = lookup(&honest, 1).await;
        let sold = honest
            .call(
                Body::WarehouseSell {
                    epoch: Epoch(1),
                    order: Order {
                        id: RequestId {
                            node: NodeId(2),
                            seq: 2,
                        },
                        product: ProductId(0),
                        qty: Qty(1),
                    },
                },
                TIMEOUT,
            )
            .await
            .unwrap();
        assert!(matches!(sold, Body::Deposited { .. }), "{sold:?}");
        let books = lookup(&honest, 3).await;
        assert_eq!(books[0], before[0] + 1, "the keyed caller trades");
        drop(honest);
        let captured = recorded.lock().unwrap().clone();
        assert!(captured.starts_with(&MAGIC), "a keyed hello was recorded");

        // 1. No key: the protocol's own hello and a forged message 3.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&plain_hello()).await.unwrap();
        s.write_all(&forged_sell(100)).await.unwrap();
        assert!(until_closed(&mut s).await.is_empty(), "not even a welcome");
        let unkeyed = trader(Tcp::shared(), addr);
        let e = unkeyed
            .call(
                Body::Lookup {
                    id: RequestId {
                        node: NodeId(2),
                        seq: 4,
                    },
                    epoch: Epoch(1),
                },
                TIMEOUT,
            )
            .await;
        assert!(e.is_err(), "{e:?}");

        // 2. A wrong key: refused, whichever side finds out first.
        let wrong = trader(keyed("not the market's key at all"), addr);
        let e = wrong
            .call(
                Body::Lookup {
                    id: RequestId {
                        node: NodeId(2),
                        seq: 5,
                    },
                    epoch: Epoch(1),
                },
                TIMEOUT,
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("does not hold this market's key"),
            "{e}"
        );
        // ...and a caller that guesses the proof.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&MAGIC).await.unwrap();
        s.write_all(&[7u8; 32]).await.unwrap();
        let mut answer = [0u8; 72];
        s.read_exact(&mut answer).await.unwrap();
        s.write_all(&[9u8; 32]).await.unwrap();
        s.write_all(&forged_sell(101)).await.unwrap();
        assert!(until_closed(&mut s).await.is_empty());

        // 3. The recorded hello (and the sealed sell after it) sent again on
        // a new connection: the listener's fresh nonce makes its proof wrong.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&captured).await.unwrap();
        let got = until_closed(&mut s).await;
        assert_eq!(got.len(), 72, "only the listener's challenge, then closed");
        assert_eq!(got[..8], MAGIC);

        // The books are as the keyed caller left them.
        let after = lookup(&trader(keyed(KEY), addr), 6).await;
        assert_eq!(after, books, "no refused caller changed the books");
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let log = logs.text();
    assert!(
        log.contains("refused at the hello: it did not open with the keyed hello"),
        "{log}"
    );
    assert!(
        log.contains("refused at the hello: its proof is wrong"),
        "{log}"
    );
    assert!(
        log.matches("refused at the hello").count() >= 4,
        "no key (twice), the wrong key, the guessed proof, the replay: {log}"
    );
}
