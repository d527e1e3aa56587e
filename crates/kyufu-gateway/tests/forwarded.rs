//! Client addresses behind a proxy, with real non-loopback addresses: the test makes a network
//! namespace joined to this one by a veth pair, so two clients (10.200.N.2 and 10.200.N.3 inside
//! it) reach a small forwarding proxy in this namespace (10.200.N.1), which adds the client's
//! address to `X-Forwarded-For` and passes the request to the gateway — the gateway sees only the
//! proxy as its TCP peer. With the proxy trusted, each client is limited by its own address; an
//! untrusted peer's `X-Forwarded-For` is ignored; and, as the control, a gateway that trusts no
//! proxy puts both clients in the proxy's one bucket.
//!
//! Making namespaces needs root (`ip netns`, iproute2). Not root: the test says so loudly and
//! skips. Root but the namespace cannot be made: the test fails.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use kyufu_admission::Keyring;
use kyufu_gateway::{Gateway, GatewayConfig, TrustedProxies};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A network namespace with a veth pair to this one; removed (with the pair) on drop.
struct Netns {
    name: String,
    host: Ipv4Addr,
    clients: [Ipv4Addr; 2],
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run `ip` (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Netns {
    /// `None` when not root.
    fn create() -> Option<Netns> {
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!(
                "\n\n*** SKIPPED: forwarded.rs needs root to create network namespaces (`ip netns`); \
                 run it as root (CI does). NOTHING WAS TESTED. ***\n"
            );
            return None;
        }
        let id = std::process::id();
        let net = u8::try_from(id % 200).unwrap_or(0) + 20;
        let ns = Netns {
            name: format!("kyufu-fwd-{id}"),
            host: Ipv4Addr::new(10, 200, net, 1),
            clients: [Ipv4Addr::new(10, 200, net, 2), Ipv4Addr::new(10, 200, net, 3)],
        };
        let (host_if, ns_if) = (format!("kyh{}", id % 1_000_000), format!("kyn{}", id % 1_000_000));
        ip(&["netns", "add", &ns.name]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{}/24", ns.host), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        for client in ns.clients {
            ip(&["-n", &ns.name, "addr", "add", &format!("{client}/24"), "dev", &ns_if]);
        }
        ip(&["-n", &ns.name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        Some(ns)
    }

    /// Runs `work` on a thread that has entered the namespace (sockets it opens live there), on
    /// its own runtime, and hands back its result.
    async fn run<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(&self, work: impl FnOnce() -> F + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
                .expect("enter the namespace");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let _ = tx.send(rt.block_on(work()));
        });
        rx.await.expect("the namespace thread answered")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys the veth end inside it, and with it the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A gateway on `addr` with tight per-client limits (burst 2 joins, 1 submission).
async fn gateway(addr: IpAddr, trusted: &str) -> SocketAddr {
    let mut config = GatewayConfig::new("rice", Keyring::random(), "http://127.0.0.1:9");
    config.rate_per_sec = 0;
    (config.join_limit_per_sec, config.join_limit_burst) = (1, 2);
    (config.submit_limit_per_sec, config.submit_limit_burst) = (1, 1);
    config.connect_timeout = Duration::from_millis(200);
    config.trusted_proxies = TrustedProxies::parse(trusted).expect("ranges");
    let listener = TcpListener::bind((addr, 0)).await.expect("bind the gateway");
    let bound = listener.local_addr().expect("addr");
    let (gw, _handle) = Gateway::new(config, prometheus::Registry::new()).expect("gateway");
    tokio::spawn(gw.serve(listener, std::future::pending()));
    bound
}

/// A one-request-per-connection HTTP proxy on `addr` that appends the client's address to
/// `X-Forwarded-For`, as a load balancer does.
async fn forwarding_proxy(addr: IpAddr, upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind((addr, 0)).await.expect("bind the proxy");
    let bound = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut client, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_head(&mut client).await else { return };
                let mut lines: Vec<String> = head.split("\r\n").filter(|l| !l.is_empty()).map(str::to_owned).collect();
                match lines.iter_mut().find(|l| l.to_ascii_lowercase().starts_with("x-forwarded-for:")) {
                    Some(line) => line.push_str(&format!(", {}", peer.ip())),
                    None => lines.push(format!("X-Forwarded-For: {}", peer.ip())),
                }
                let Ok(mut up) = TcpStream::connect(upstream).await else { return };
                if up.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                }
            });
        }
    });
    bound
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.push(byte[0]);
    }
    String::from_utf8(buf).ok()
}

/// `POST path` from `local` to `to`, with an `X-Forwarded-For` of our own if given; the status.
async fn post(local: Ipv4Addr, to: SocketAddr, path: &str, forged: Option<&str>) -> u16 {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(local.into(), 0)).expect("bind the client address");
    let mut stream = socket.connect(to).await.expect("connect");
    let xff = forged.map(|f| format!("X-Forwarded-For: {f}\r\n")).unwrap_or_default();
    let request = format!("POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Length: 0\r\nConnection: close\r\n{xff}\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("answer");
    let text = String::from_utf8_lossy(&answer);
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not an HTTP answer: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_are_limited_by_their_own_address() {
    let Some(ns) = Netns::create() else { return };
    let host = IpAddr::V4(ns.host);
    let trusting = gateway(host, &format!("{}/32", ns.host)).await;
    let proxy = forwarding_proxy(host, trusting).await;
    let control = forwarding_proxy(host, gateway(host, "").await).await;
    let [a, b] = ns.clients;

    let statuses = tokio::time::timeout(
        Duration::from_secs(30),
        ns.run(move || async move {
            let join = "/queue/join";
            let mut s = Vec::new();
            // A spends its burst of two joins through the proxy; B, behind the same proxy, is not
            // affected.
            for _ in 0..3 {
                s.push(post(a, proxy, join, None).await);
            }
            s.push(post(b, proxy, join, None).await);
            // A's own X-Forwarded-For is to the left of what the proxy appended: not believed.
            s.push(post(a, proxy, join, Some("198.51.100.77")).await);
            // B straight to the gateway, an untrusted peer: its header is ignored, its own bucket
            // (one join left) is used.
            s.push(post(b, trusting, join, Some("198.51.100.88")).await);
            s.push(post(b, trusting, join, Some("198.51.100.89")).await);
            // Submissions are limited by the client too (burst 1): A's first passes the limit
            // (and finds no intake: 503), its second does not; B's first passes.
            let submit = "/api/v1/applications";
            s.push(post(a, proxy, submit, None).await);
            s.push(post(a, proxy, submit, None).await);
            s.push(post(b, proxy, submit, None).await);
            // Control: a gateway that trusts no proxy sees only the proxy, one bucket for both.
            s.push(post(a, control, join, None).await);
            s.push(post(b, control, join, None).await);
            s.push(post(a, control, join, None).await);
            s
        }),
    )
    .await
    .expect("the clients finished within 30 s");
    assert_eq!(
        statuses,
        [200, 200, 429, 200, 429, 200, 429, 503, 429, 503, 200, 200, 429],
        "joins A A A B, forged A, direct B B, submits A A B, control A B A"
    );
}
