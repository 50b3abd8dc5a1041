//! The FTP download check against a small scripted FTP server on 127.0.0.1 / ::1 with a
//! passive data listener (no root needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_lvs::checker::ftp::FtpCheck;
use ha_lvs::checker::probe::run_probe;
use ha_lvs::checker::{CheckKind, CheckSpec, ProbeKey, ProbeOutcome};
use ha_lvs::ldirectord::parse_ldirectord;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How the server behaves.
#[derive(Clone, Copy)]
struct Script {
    /// Announce the data port, then close the listener: the data connection is refused.
    refuse_data: bool,
}

/// The only file: /pub/ok.txt.
const FILE: &[u8] = b"status: all systems OK\n";

/// Commands received per connection.
type Seen = Arc<Mutex<Vec<Vec<String>>>>;

async fn server(bind: IpAddr, script: Script) -> (SocketAddr, Seen) {
    let l = TcpListener::bind(SocketAddr::new(bind, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let i = {
                let mut g = seen2.lock().unwrap();
                g.push(Vec::new());
                g.len() - 1
            };
            tokio::spawn(serve(s, script, seen2.clone(), i));
        }
    });
    (addr, seen)
}

async fn serve(s: TcpStream, script: Script, seen: Seen, i: usize) {
    let local = s.local_addr().unwrap().ip();
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut data: Option<TcpListener> = None;
    let _ = w.write_all(b"220 (scripted FTP)\r\n").await;
    while let Ok(Some(line)) = lines.next_line().await {
        seen.lock().unwrap()[i].push(line.clone());
        let reply = match line.as_str() {
            "USER anonymous" | "USER bob" => "331 Please specify the password.\r\n".to_string(),
            l if l.starts_with("USER ") => "530 Unknown user.\r\n".into(),
            "PASS pw" => "230 Login successful.\r\n".into(),
            l if l.starts_with("PASS ") => "530 Login incorrect.\r\n".into(),
            "TYPE I" => "200 Switching to Binary mode.\r\n".into(),
            "PASV" | "EPSV" => {
                let l = TcpListener::bind(SocketAddr::new(local, 0)).await.unwrap();
                let port = l.local_addr().unwrap().port();
                if !script.refuse_data {
                    data = Some(l);
                }
                if line == "PASV" {
                    // A bogus address: the client must use the control connection's peer.
                    format!(
                        "227 Entering Passive Mode (10,255,255,1,{},{}).\r\n",
                        port >> 8,
                        port & 0xff
                    )
                } else {
                    format!("229 Entering Extended Passive Mode (|||{port}|)\r\n")
                }
            }
            l if l.starts_with("RETR ") => match (&l[5..], data.take()) {
                ("/pub/ok.txt" | "/pub/other.txt", Some(dl)) => {
                    let body: &[u8] = if &l[5..] == "/pub/ok.txt" {
                        FILE
                    } else {
                        b"nothing to see\n"
                    };
                    let accepted = tokio::time::timeout(Duration::from_secs(2), dl.accept()).await;
                    let Ok(Ok((mut d, _))) = accepted else {
                        let _ = w.write_all(b"425 Can't open data connection.\r\n").await;
                        continue;
                    };
                    let _ = w
                        .write_all(b"150 Opening BINARY mode data connection.\r\n")
                        .await;
                    let _ = d.write_all(body).await;
                    drop(d);
                    "226 Transfer complete.\r\n".into()
                }
                (_, None) => "425 Use PASV first.\r\n".into(),
                _ => "550 Failed to open file.\r\n".into(),
            },
            "QUIT" => {
                let _ = w.write_all(b"221 Goodbye.\r\n").await;
                return;
            }
            _ => "500 Unknown command.\r\n".into(),
        };
        let _ = w.write_all(reply.as_bytes()).await;
    }
}

/// The check ldirectord.cf's `virtual` block `body` gives a real server at `addr`.
fn imported(addr: SocketAddr, body: &str) -> ProbeKey {
    let cf = format!(
        "virtual=10.0.0.1:{}\n\treal={addr} masq\n\tservice=ftp\n{body}",
        addr.port()
    );
    let c = parse_ldirectord(&cf, "ftp.cf").unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let mut spec = c.monitor.services[0].reals[0].check.clone().unwrap();
    assert!(matches!(spec.kind, CheckKind::Ftp(_)), "{:?}", spec.kind);
    spec.timeout = Duration::from_secs(3);
    ProbeKey { target: addr, spec }
}

fn down_reason(o: ProbeOutcome) -> String {
    match o {
        ProbeOutcome::Down(r) => r,
        other => panic!("expected down, got {other:?}"),
    }
}

/// The commands of connection `i` once the server has seen `last` (or a timeout).
async fn commands(seen: &Seen, i: usize, last: &str) -> Vec<String> {
    for _ in 0..200 {
        let now = seen.lock().unwrap().get(i).cloned().unwrap_or_default();
        if now.last().is_some_and(|l| l == last) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().unwrap().get(i).cloned().unwrap_or_default()
}

const LOGIN: &str = "\tlogin=anonymous\n\tpasswd=pw\n";

#[tokio::test]
async fn download_up_when_the_file_contains_receive() {
    let (addr, seen) = server("127.0.0.1".parse().unwrap(), Script { refuse_data: false }).await;
    let key = imported(
        addr,
        &format!("{LOGIN}\trequest=\"pub/ok.txt\"\n\treceive=\"all systems OK\"\n"),
    );
    assert_eq!(run_probe(&key).await, ProbeOutcome::Up);
    assert_eq!(
        commands(&seen, 0, "QUIT").await,
        [
            "USER anonymous",
            "PASS pw",
            "TYPE I",
            "PASV",
            "RETR /pub/ok.txt",
            "QUIT"
        ]
    );
    // No receive: a completed download is enough.
    let key = imported(addr, &format!("{LOGIN}\trequest=\"/pub/other.txt\"\n"));
    assert_eq!(run_probe(&key).await, ProbeOutcome::Up);
}

#[tokio::test]
async fn download_down_when_missing_mismatched_refused_or_bad_password() {
    let (addr, _) = server("127.0.0.1".parse().unwrap(), Script { refuse_data: false }).await;
    let r = down_reason(
        run_probe(&imported(
            addr,
            &format!("{LOGIN}\trequest=\"/gone.txt\"\n\treceive=\"OK\"\n"),
        ))
        .await,
    );
    assert!(
        r.starts_with(&addr.to_string()) && r.contains("RETR /gone.txt: 550 Failed to open file"),
        "{r}"
    );

    let r = down_reason(
        run_probe(&imported(
            addr,
            &format!("{LOGIN}\trequest=\"/pub/other.txt\"\n\treceive=\"all systems OK\"\n"),
        ))
        .await,
    );
    assert!(
        r.contains("file (15 bytes) lacks \"all systems OK\"") && r.contains("nothing to see"),
        "{r}"
    );

    let r = down_reason(
        run_probe(&imported(
            addr,
            "\tlogin=bob\n\tpasswd=\"hunter2\"\n\trequest=\"/pub/ok.txt\"\n",
        ))
        .await,
    );
    assert!(
        r.contains("PASS ***: 530 Login incorrect") && !r.contains("hunter2"),
        "{r}"
    );

    let (refusing, seen) = server("127.0.0.1".parse().unwrap(), Script { refuse_data: true }).await;
    let r = down_reason(
        run_probe(&imported(
            refusing,
            &format!("{LOGIN}\trequest=\"/pub/ok.txt\"\n"),
        ))
        .await,
    );
    assert!(
        r.contains("PASV: data connection: connect 127.0.0.1:") && r.contains("refused"),
        "{r}"
    );
    // The bogus address in the 227 reply was not used, and RETR never went out.
    assert!(!r.contains("10.255.255.1"), "{r}");
    let c = commands(&seen, 0, "PASV").await;
    assert_eq!(c.last().map(String::as_str), Some("PASV"), "{c:?}");
}

#[tokio::test]
async fn download_over_ipv6_uses_epsv() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        // CI (HA_TOOLKIT_REQUIRE_PRIVILEGED) turns this skip into a failure.
        testkit::skip_or_fail("download_over_ipv6_uses_epsv", "no IPv6 loopback");
        return;
    };
    drop(probe);
    let (addr, seen) = server("::1".parse().unwrap(), Script { refuse_data: false }).await;
    let mut spec = CheckSpec::new(CheckKind::Ftp(FtpCheck {
        login: "anonymous".into(),
        passwd: "pw".into(),
        request: "/pub/ok.txt".into(),
        receive: Some("OK".into()),
    }));
    spec.timeout = Duration::from_secs(3);
    let key = ProbeKey { target: addr, spec };
    assert_eq!(run_probe(&key).await, ProbeOutcome::Up);
    let c = commands(&seen, 0, "QUIT").await;
    assert_eq!(c[3], "EPSV", "{c:?}");
}
