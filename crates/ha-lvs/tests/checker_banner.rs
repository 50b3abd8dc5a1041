//! Banner / line checks and login dialogues against small tokio servers on 127.0.0.1 (no
//! root needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_lvs::checker::probe::run_probe;
use ha_lvs::checker::{CheckKind, CheckSpec, ProbeKey, ProbeOutcome};
use ha_lvs::ldirectord::parse_ldirectord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a test server behaves on each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Send this greeting at once, then wait for the client to go.
    Greet(&'static str),
    /// Wait for a line, then answer it with this text.
    Answer(&'static str),
    /// Accept and say nothing.
    Silent,
}

/// What the server read from each client, and whether the client reset the connection.
#[derive(Default)]
struct Seen {
    received: Vec<String>,
    resets: usize,
}

/// A listener on 127.0.0.1 handing each connection to `handle` with the shared record.
async fn listen<F, Fut>(handle: F) -> (SocketAddr, Arc<Mutex<Seen>>)
where
    F: Fn(TcpStream, Arc<Mutex<Seen>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(handle(s, seen2.clone()));
        }
    });
    (addr, seen)
}

async fn server(b: Behaviour) -> (SocketAddr, Arc<Mutex<Seen>>) {
    listen(move |s, seen| serve(s, b, seen)).await
}

async fn serve(mut s: TcpStream, b: Behaviour, seen: Arc<Mutex<Seen>>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    match b {
        Behaviour::Greet(text) => {
            let _ = s.write_all(text.as_bytes()).await;
        }
        Behaviour::Answer(text) => {
            while !got.contains(&b'\n') {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(text.as_bytes()).await;
        }
        Behaviour::Silent => {}
    }
    // Read until the client goes away, noting how.
    let reset = loop {
        match s.read(&mut buf).await {
            Ok(0) => break false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    let mut g = seen.lock().unwrap();
    g.received.push(String::from_utf8_lossy(&got).into_owned());
    g.resets += usize::from(reset);
}

fn key(target: SocketAddr, send: Option<&str>, expect: &str, timeout_ms: u64) -> ProbeKey {
    let mut spec = CheckSpec::new(CheckKind::Banner {
        send: send.map(str::to_string),
        expect: expect.into(),
        steps: Vec::new(),
        tls: None,
    });
    spec.timeout = Duration::from_millis(timeout_ms);
    ProbeKey { target, spec }
}

fn down_reason(o: ProbeOutcome) -> String {
    match o {
        ProbeOutcome::Down(r) => r,
        other => panic!("expected down, got {other:?}"),
    }
}

/// Wait until the server has recorded `n` finished connections.
async fn finished(seen: &Arc<Mutex<Seen>>, n: usize) {
    for _ in 0..200 {
        if seen.lock().unwrap().received.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "server saw {} connections end, wanted {n}",
        seen.lock().unwrap().received.len()
    );
}

#[tokio::test]
async fn smtp_like_greeting_is_up_and_closed_with_rst() {
    let (addr, seen) = server(Behaviour::Greet("220 mail.example.test ESMTP ready\r\n")).await;
    assert_eq!(
        run_probe(&key(addr, None, "220", 2000)).await,
        ProbeOutcome::Up
    );
    finished(&seen, 1).await;
    let g = seen.lock().unwrap();
    assert_eq!(
        g.received,
        vec![String::new()],
        "nothing sent without a request"
    );
    assert_eq!(g.resets, 1, "the check must close with an RST");
}

#[tokio::test]
async fn request_then_answer() {
    let (addr, seen) = server(Behaviour::Answer("+PONG\r\n")).await;
    assert_eq!(
        run_probe(&key(addr, Some("PING\r\n"), "PONG", 2000)).await,
        ProbeOutcome::Up
    );
    finished(&seen, 1).await;
    assert_eq!(seen.lock().unwrap().received, vec!["PING\r\n".to_string()]);
    // The same server without the request never answers: down on timeout.
    let r = down_reason(run_probe(&key(addr, None, "PONG", 300)).await);
    assert!(r.contains("no answer within 300 ms"), "{r}");
}

#[tokio::test]
async fn wrong_banner_is_down_with_what_was_received() {
    let (addr, _) = server(Behaviour::Answer("-ERR unknown command\r\n")).await;
    // The server answers and then waits: the check reads until its timeout...
    let r = down_reason(run_probe(&key(addr, Some("PING\n"), "PONG", 300)).await);
    assert!(r.contains("no answer within"), "{r}");

    // ...while a server that closes after the wrong greeting is down at once, with context.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closer = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"554 no service here\r\n").await;
        }
    });
    let r = down_reason(run_probe(&key(closer, None, "220", 2000)).await);
    assert!(r.contains(&closer.to_string()), "{r}");
    assert!(
        r.contains("closed the connection") && r.contains("554 no service here"),
        "{r}"
    );
    assert!(r.contains("\"220\""), "{r}");
}

#[tokio::test]
async fn silent_server_times_out_and_closed_port_is_down() {
    let (addr, _) = server(Behaviour::Silent).await;
    let r = down_reason(run_probe(&key(addr, None, "220", 300)).await);
    assert!(r.contains("no answer within 300 ms"), "{r}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let r = down_reason(run_probe(&key(closed, None, "220", 2000)).await);
    assert!(r.contains(&format!("connect {closed}")), "{r}");
}

#[tokio::test]
async fn greeting_split_over_several_writes() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                for part in ["* ", "O", "K IMAP4rev1 ready\r\n"] {
                    let _ = s.write_all(part.as_bytes()).await;
                    let _ = s.flush().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let mut b = [0u8; 16];
                let _ = s.read(&mut b).await;
            });
        }
    });
    assert_eq!(
        run_probe(&key(addr, None, "* OK", 2000)).await,
        ProbeOutcome::Up
    );
}

/// A scripted line server (POP3, IMAP or FTP-like): sends `greeting`, then answers each line
/// with `answer(line)` (`None`: close). Records the lines and whether the client reset.
async fn line_server(
    greeting: &'static str,
    answer: fn(&str) -> Option<String>,
) -> (SocketAddr, Arc<Mutex<Seen>>) {
    listen(move |s, seen| serve_lines(s, greeting, answer, seen)).await
}

async fn serve_lines(
    mut s: TcpStream,
    greeting: &'static str,
    answer: fn(&str) -> Option<String>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut lines = Vec::new();
    let mut pending = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = s.write_all(greeting.as_bytes()).await;
    let reset = 'conn: loop {
        let n = match s.read(&mut buf).await {
            Ok(0) => break false,
            Ok(n) => n,
            Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            let reply = answer(&line);
            lines.push(line);
            match reply {
                Some(r) => {
                    let _ = s.write_all(r.as_bytes()).await;
                }
                None => break 'conn false,
            }
        }
    };
    let mut g = seen.lock().unwrap();
    g.received.push(lines.join("|"));
    g.resets += usize::from(reset);
}

/// POP3: alice / s3cret.
fn pop3(line: &str) -> Option<String> {
    Some(match line {
        "USER alice" => "+OK send PASS\r\n".into(),
        "PASS s3cret" => "+OK maildrop has 2 messages\r\n".into(),
        l if l.starts_with("PASS ") => "-ERR [AUTH] invalid password\r\n".into(),
        "QUIT" => return None,
        _ => "-ERR what?\r\n".into(),
    })
}

/// IMAP: bob / "pa ss".
fn imap(line: &str) -> Option<String> {
    let (tag, cmd) = line.split_once(' ')?;
    Some(match cmd {
        "LOGIN \"bob\" \"pa ss\"" => format!("{tag} OK LOGIN completed\r\n"),
        c if c.starts_with("LOGIN ") => format!("{tag} NO [AUTHENTICATIONFAILED] nope\r\n"),
        "LOGOUT" => format!("* BYE logging out\r\n{tag} OK LOGOUT completed\r\n"),
        _ => format!("{tag} BAD what?\r\n"),
    })
}

/// FTP: anonymous / any password containing '@'.
fn ftp(line: &str) -> Option<String> {
    Some(match line {
        "USER anonymous" => "331 Please specify the password.\r\n".into(),
        l if l.starts_with("USER ") => "530 This FTP server is anonymous only.\r\n".into(),
        l if l.starts_with("PASS ") && l.contains('@') => "230 Login successful.\r\n".into(),
        l if l.starts_with("PASS ") => "530 Login incorrect.\r\n".into(),
        "QUIT" => "221 Goodbye.\r\n".into(),
        _ => "500 Unknown command.\r\n".into(),
    })
}

/// The check ldirectord.cf's `virtual` block `body` gives a real server at `addr`.
fn imported(addr: SocketAddr, body: &str) -> ProbeKey {
    let cf = format!(
        "virtual=10.0.0.1:{}\n\treal={addr} masq\n{body}",
        addr.port()
    );
    let c = parse_ldirectord(&cf, "login.cf").unwrap();
    let mut spec = c.monitor.services[0].reals[0].check.clone().unwrap();
    spec.timeout = Duration::from_secs(1);
    ProbeKey { target: addr, spec }
}

#[tokio::test]
async fn pop_login_up_when_accepted_down_naming_the_step_when_refused() {
    let (addr, seen) = line_server("+OK POP3 ready\r\n", pop3).await;
    let good = imported(
        addr,
        "\tservice=pop\n\tlogin=\"alice\"\n\tpasswd=\"s3cret\"\n",
    );
    assert_eq!(run_probe(&good).await, ProbeOutcome::Up);
    finished(&seen, 1).await;
    // The QUIT goes out just before the RST and is read first: this server closes on it.
    assert_eq!(
        seen.lock().unwrap().received[0],
        "USER alice|PASS s3cret|QUIT"
    );
    let bad = imported(
        addr,
        "\tservice=pop\n\tlogin=\"alice\"\n\tpasswd=\"wrong-pw\"\n",
    );
    let r = down_reason(run_probe(&bad).await);
    assert!(r.contains(&addr.to_string()), "{r}");
    assert!(r.contains("step 2 (PASS ***)"), "{r}");
    assert!(r.contains("-ERR [AUTH] invalid password"), "{r}");
    assert!(!r.contains("wrong-pw"), "the password must not show: {r}");
    // The server keeps the connection open after -ERR: the check waits until its timeout.
    assert!(r.contains("no answer within 1000 ms"), "{r}");
    finished(&seen, 2).await;
    assert_eq!(seen.lock().unwrap().received[1], "USER alice|PASS wrong-pw");
    assert_eq!(seen.lock().unwrap().resets, 1, "closed with an RST");

    // An unknown user fails at step 1.
    let who = imported(addr, "\tservice=pop\n\tlogin=\"mallory\"\n");
    let r = down_reason(run_probe(&who).await);
    assert!(
        r.contains("step 1 (USER mallory)") && r.contains("-ERR what?"),
        "{r}"
    );
}

#[tokio::test]
async fn imap_login_tagged_ok_and_refusal() {
    let (addr, seen) = line_server("* OK [CAPABILITY IMAP4rev1] ready\r\n", imap).await;
    let good = imported(addr, "\tservice=imap\n\tlogin=bob\n\tpasswd=\"pa ss\"\n");
    assert_eq!(run_probe(&good).await, ProbeOutcome::Up);
    finished(&seen, 1).await;
    assert!(
        seen.lock().unwrap().received[0].starts_with("a1 LOGIN \"bob\" \"pa ss\""),
        "{:?}",
        seen.lock().unwrap().received
    );
    let bad = imported(addr, "\tservice=imap\n\tlogin=bob\n\tpasswd=\"guess\"\n");
    let r = down_reason(run_probe(&bad).await);
    assert!(
        r.contains("step 1 (a1 LOGIN \\\"bob\\\" \\\"***\\\")")
            && r.contains("a1 NO [AUTHENTICATIONFAILED]")
            && !r.contains("guess"),
        "{r}"
    );
}

#[tokio::test]
async fn ftp_login_without_request() {
    let (addr, seen) = line_server("220 (vsFTPd 3.0.3)\r\n", ftp).await;
    let base = "\tservice=ftp\n\tlogin=anonymous\n";
    let good = imported(addr, &format!("{base}\tpasswd=\"ld@example\"\n"));
    assert_eq!(run_probe(&good).await, ProbeOutcome::Up);
    finished(&seen, 1).await;
    assert!(
        seen.lock().unwrap().received[0].starts_with("USER anonymous|PASS ld@example|QUIT"),
        "{:?}",
        seen.lock().unwrap().received
    );
    // A refused password names its step. (With a request the check is the download of
    // tests/checker_ftp.rs.)
    let r = down_reason(run_probe(&imported(addr, &format!("{base}\tpasswd=nope\n"))).await);
    assert!(
        r.contains("step 2 (PASS ***)") && r.contains("530 Login incorrect"),
        "{r}"
    );
    assert!(r.contains("\"230\" or \"202\""), "{r}");
}
