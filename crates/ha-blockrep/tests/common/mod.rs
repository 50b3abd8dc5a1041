//! Shared helpers for the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ha_blockrep::device::{DynDevice, FileDevice, MemDevice, SubDevice};
use ha_blockrep::engine::{Engine, EngineConfig};
use ha_blockrep::meta::{Layout, Metadata};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const MIB: u64 = 1 << 20;

/// A node on a RAM disk with internal metadata (the MemDevice is returned for crash tests).
pub async fn mem_node(cfg: EngineConfig, total: u64) -> (Engine, Arc<MemDevice>) {
    let mem = Arc::new(MemDevice::new(total));
    let dev: DynDevice = mem.clone();
    let layout = Layout::internal(total, 61).unwrap();
    let md_dev: DynDevice =
        Arc::new(SubDevice::new(dev.clone(), layout.data_size, layout.md_size()).unwrap());
    let data: DynDevice = Arc::new(SubDevice::new(dev, 0, layout.data_size).unwrap());
    let md = Metadata::create(md_dev, layout.data_size, 61)
        .await
        .unwrap();
    (Engine::attach(data, md, cfg).await.unwrap(), mem)
}

/// Re-attach a node from an existing RAM disk (after a crash).
pub async fn mem_reattach(cfg: EngineConfig, mem: Arc<MemDevice>) -> Engine {
    let dev: DynDevice = mem.clone();
    let layout = Layout::internal(mem_size(&mem), 61).unwrap();
    let md_dev: DynDevice =
        Arc::new(SubDevice::new(dev.clone(), layout.data_size, layout.md_size()).unwrap());
    let data: DynDevice = Arc::new(SubDevice::new(dev, 0, layout.data_size).unwrap());
    let md = Metadata::load(md_dev).await.unwrap();
    Engine::attach(data, md, cfg).await.unwrap()
}

fn mem_size(m: &MemDevice) -> u64 {
    use ha_blockrep::device::BlockDevice;
    m.size()
}

/// A node on files with external metadata: `<dir>/<name>.img` holds exactly the data.
pub async fn file_node(cfg: EngineConfig, dir: &Path, size: u64) -> (Engine, PathBuf) {
    let data_path = dir.join(format!("{}.img", cfg.node_name));
    let md_path = dir.join(format!("{}.md", cfg.node_name));
    let data: DynDevice = Arc::new(FileDevice::create(&data_path, size).unwrap());
    let md_dev: DynDevice =
        Arc::new(FileDevice::create(&md_path, Layout::new(size, 61).md_size()).unwrap());
    let md = Metadata::create(md_dev, size, 61).await.unwrap();
    (Engine::attach(data, md, cfg).await.unwrap(), data_path)
}

/// Test configuration with fast timers.
pub fn cfg(node: &str) -> EngineConfig {
    let mut c = EngineConfig::new("r0", node);
    c.ping_interval = Duration::from_millis(100);
    c.ping_timeout = Duration::from_millis(500);
    c.connect_retry = Duration::from_millis(50);
    c.rate = ha_blockrep::repl::rate::RateMode::Fixed(1 << 30);
    c
}

pub fn any_port() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Connect `a` (listening) and `b` (connecting) and wait until both are Connected.
pub async fn link(a: &Engine, b: &Engine) -> std::net::SocketAddr {
    let addr = a.listen(any_port()).await.unwrap();
    b.connect(addr);
    wait_established(a, b).await;
    addr
}

pub async fn wait_established(a: &Engine, b: &Engine) {
    use ha_blockrep::state::ReplState;
    for e in [a, b] {
        if let Err(err) = e
            .wait_for("established", Duration::from_secs(20), |s| {
                s.repl == ReplState::Established
            })
            .await
        {
            panic!(
                "{err}; last errors: {:?} / {:?}",
                a.last_error(),
                b.last_error()
            );
        }
    }
}

/// Run qemu-io against an NBD URL; returns (success, stdout+stderr).
pub async fn qemu_io(url: &str, cmds: &[&str]) -> (bool, String) {
    let mut c = tokio::process::Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.arg(url);
    let out = c.output().await.expect("qemu-io runs (install qemu-utils)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // qemu-io exits 0 even when a pattern check fails; look at its output too.
    let ok = out.status.success()
        && !text.contains("Pattern verification failed")
        && !text.contains("failed:")
        && !text.contains("Could not");
    (ok, text)
}

pub fn have_qemu() -> bool {
    std::process::Command::new("qemu-io")
        .arg("--version")
        .output()
        .is_ok()
}
