//! keepalived (Debian package) as the reference: VRRPv3, unicast peers, both nodes in
//! state BACKUP with priorities 150 (A) and 100 (B), preemption on.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use testkit::netns::NsChild;

use super::rig::{IFACE, NODE_NAMES, Rig, VIP, VIP_PREFIX};
use super::system::{System, log_name};

/// keepalived with one VRRP instance.
pub struct Keepalived {
    advert_int: String,
    cycle: Duration,
    realtime: bool,
    version: String,
}

impl Keepalived {
    /// Check that keepalived is installed; `advert_int` in seconds as keepalived reads it.
    pub fn new(advert_int: &str, realtime: bool) -> anyhow::Result<Keepalived> {
        let secs: f64 = advert_int
            .parse()
            .with_context(|| format!("advert_int `{advert_int}` is not a number of seconds"))?;
        if !(0.01..=255.0).contains(&secs) {
            anyhow::bail!("advert_int {advert_int} is outside keepalived's 0.01..=255 s");
        }
        let out = Command::new("keepalived")
            .arg("--version")
            .output()
            .context(
                "running `keepalived --version`: install Debian's keepalived \
             (apt-get install keepalived)",
            )?;
        // keepalived prints its version on stderr.
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        let version = text
            .split_whitespace()
            .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or("(unknown version)")
            .to_string();
        Ok(Keepalived {
            advert_int: advert_int.to_string(),
            cycle: Duration::from_secs_f64(secs),
            realtime,
            version,
        })
    }

    fn config(&self, rig: &Rig, node: usize) -> String {
        let me = rig.ip(node);
        let peer = rig.ip(1 - node);
        let priority = if node == 0 { 150 } else { 100 };
        let name = NODE_NAMES[node];
        // Our node runs SCHED_FIFO + mlockall with --realtime; keepalived's equivalents.
        let rt = if self.realtime {
            "    vrrp_rt_priority 50\n    vrrp_no_swap\n"
        } else {
            ""
        };
        format!(
            "global_defs {{
    router_id bench_{name}
    vrrp_version 3
{rt}}}
vrrp_instance VI_BENCH {{
    state BACKUP
    interface {IFACE}
    virtual_router_id 77
    priority {priority}
    advert_int {adv}
    unicast_src_ip {me}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {VIP}/{VIP_PREFIX} dev {IFACE}
    }}
}}
",
            adv = self.advert_int
        )
    }
}

impl System for Keepalived {
    fn name(&self) -> &str {
        "keepalived"
    }

    fn setting(&self) -> String {
        format!(
            "keepalived {}, VRRPv3 unicast, advert_int {}{}",
            self.version,
            self.advert_int,
            if self.realtime {
                ", vrrp_rt_priority 50"
            } else {
                ""
            }
        )
    }

    fn cycle(&self) -> Duration {
        self.cycle
    }

    fn prepare(&mut self, rig: &Rig) -> anyhow::Result<()> {
        for (node, name) in NODE_NAMES.iter().enumerate() {
            let path = rig.dir().join(format!("keepalived-{name}.conf"));
            std::fs::write(&path, self.config(rig, node))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    fn start(&mut self, rig: &Rig, node: usize, run: usize) -> anyhow::Result<NsChild> {
        let n = NODE_NAMES[node];
        let d = rig.dir();
        let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
        let conf = s(d.join(format!("keepalived-{n}.conf")));
        // Own pid files per node and run: two instances would share /run otherwise, and a
        // pid file left by a SIGKILLed run makes keepalived refuse to start ("daemon is
        // already running") when its pid has been reused.
        let pid = s(d.join(format!("keepalived-{n}-{run}.pid")));
        let vrrp_pid = s(d.join(format!("keepalived-vrrp-{n}-{run}.pid")));
        let chk_pid = s(d.join(format!("keepalived-checkers-{n}-{run}.pid")));
        rig.spawn_logged(
            node,
            "keepalived",
            &[
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
                "--vrrp",
                "--use-file",
                &conf,
                "--pid",
                &pid,
                "--vrrp_pid",
                &vrrp_pid,
                "--checkers_pid",
                &chk_pid,
            ],
            &log_name(self.name(), node, run),
        )
    }
}
