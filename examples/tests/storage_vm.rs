//! `ha-storage-node` end to end in two VMs of the test rig (real kernels, UDP link): the seeds'
//! NFS/MySQL pair minus the daemon. alpha runs the group (VIP, `drbddisk` promote, the kernel
//! NBD client on our export, ext4 mounted by a heartbeat `resource.d` script), writes files and
//! crashes (SIGKILL); beta declares it dead, takes the VIP, promotes its replica, attaches,
//! mounts, and finds the same files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testkit::vm::{self, UdpLink, Vm};

const DISK_MIB: u64 = 48;

const CLUSTER: &str = r#"
[cluster]
name = "vm-storage"
[[node]]
name = "alpha"
[[node]]
name = "beta"
[[link]]
name = "lan"
kind = "ucast"
interface = "eth0"
peers = ["192.168.61.1", "192.168.61.2"]
[timing]
keepalive = "200ms"
deadtime = "2s"
initdead = "10s"
[policy]
auto_failback = false
[auth]
active = 1
[[auth.key]]
id = 1
secret = "vm-storage-test-secret"
[[resource]]
id = "vip"
class = "builtin"
kind = "IPaddr"
params = { ip = "192.168.61.100", cidr_netmask = 24, nic = "eth0", garp_count = 2 }
[[resource]]
id = "disk"
class = "builtin"
kind = "drbddisk"
params = { resource = "r0" }
[[resource]]
id = "nbd"
class = "builtin"
kind = "nbd"
params = { device = "/dev/nbd0", export = "r0" }
[[resource]]
id = "fs"
class = "heartbeat"
script = "Filesystem"
args = ["/dev/nbd0", "/mnt/data", "ext4"]
[[group]]
id = "nfs"
resources = ["vip", "disk", "nbd", "fs"]
preferred_node = "alpha"
"#;

const R0: &str = r#"
resource r0 {
  protocol C;
  net { shared-secret "vm-r0"; ping-int 1; ping-timeout 5; }
  syncer { rate 1G; }
  on alpha { disk /dev/vda; address 192.168.61.1:7789; meta-disk internal; }
  on beta { disk /dev/vda; address 192.168.61.2:7789; meta-disk internal; }
}
"#;

/// A heartbeat v1 resource script (`Filesystem::dev::dir::type`) in busybox sh. Only where
/// /etc/ha/mkfs-ok exists may it put a filesystem on an empty device (the first start).
const FILESYSTEM: &str = r#"#!/bin/sh
dev=$1 dir=$2 fs=$3
mounted() { grep -q " $dir " /proc/mounts; }
case $4 in
start)
  mounted && exit 0
  mkdir -p "$dir"
  mount -t "$fs" "$dev" "$dir" 2>/dev/null && exit 0
  [ -e /etc/ha/mkfs-ok ] || exit 1
  mkfs.ext4 -q -F "$dev" && mount -t "$fs" "$dev" "$dir" ;;
stop) mounted || exit 0; umount "$dir" ;;
status) mounted && echo running || echo stopped ;;
esac
"#;

const HELPERS: &str = r#"
set -u
waitfor() {
    local file=$1 pat=$2 secs=$3 i
    for i in $(seq 1 $((secs * 10))); do
        grep -q -- "$pat" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timeout waiting for '$pat' in $file" >&2
    cat "$file" >&2
    return 1
}
"#;

const SCRIPT_ALPHA: &str = r#"
touch /etc/ha/mkfs-ok
/bin/ha-storage-node --cluster /etc/ha/cluster.toml --drbd /etc/ha/r0.res --node alpha --create-md --seed >/tmp/log 2>&1 &
pid=$!
waitfor /tmp/log 'group running' 90
waitfor /tmp/log 'ds=UpToDate/UpToDate' 90
ip -o addr show dev eth0 | grep -q 192.168.61.100 && echo "VIP on alpha"
for i in 1 2 3; do head -c $((i * 500000)) /dev/urandom >/mnt/data/f$i; done
echo "written on alpha" >/mnt/data/note
sync
(cd /mnt/data && sha256sum f1 f2 f3 note) | sed 's/^/SUM /'
kill -9 $pid
echo "alpha crashed" >&2
"#;

const SCRIPT_BETA: &str = r#"
/bin/ha-storage-node --cluster /etc/ha/cluster.toml --drbd /etc/ha/r0.res --node beta --create-md >/tmp/log 2>&1 &
waitfor /tmp/log 'group running node=n2' 150
ip -o addr show dev eth0 | grep -q 192.168.61.100 && echo "VIP on beta"
(cd /mnt/data && sha256sum f1 f2 f3 note) | sed 's/^/SUM /'
cat /tmp/log >&2
"#;

#[test]
fn storage_pair_fails_over_vip_disk_and_filesystem() {
    if !testkit::privileged("storage_pair_fails_over_vip_disk_and_filesystem") {
        return;
    }
    let Some(img) = vm::image_or_skip("storage_pair_fails_over_vip_disk_and_filesystem") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (la, lb) = UdpLink::pair().unwrap();
    let vm = |name: &str, end, cidr: &str, script: &str| {
        let disk = dir.path().join(format!("{name}.img"));
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(DISK_MIB << 20)
            .unwrap();
        Vm::builder()
            .image(img.clone())
            .hostname(name)
            .memory_mb(384)
            .binary(
                env!("CARGO_BIN_EXE_ha-storage-node"),
                "/bin/ha-storage-node",
            )
            .file_bytes("/etc/ha/cluster.toml", CLUSTER.as_bytes().to_vec(), 0o644)
            .file_bytes("/etc/ha/r0.res", R0.as_bytes().to_vec(), 0o644)
            .file_bytes(
                "/etc/ha.d/resource.d/Filesystem",
                FILESYSTEM.as_bytes().to_vec(),
                0o755,
            )
            .disk(disk)
            .modules(["nbd"])
            .link(end, Some(cidr))
            .command(format!("{HELPERS}\nset -e\n{script}"))
            .timeout(Duration::from_secs(240))
    };
    let (a, b) = vm::run_pair(
        ("alpha", vm("alpha", la, "192.168.61.1/24", SCRIPT_ALPHA)),
        ("beta", vm("beta", lb, "192.168.61.2/24", SCRIPT_BETA)),
    )
    .unwrap();
    assert_eq!(a.exit_code, 0, "alpha failed: {}", a.stderr);
    assert_eq!(b.exit_code, 0, "beta failed: {}", b.stderr);
    assert!(a.stdout.contains("VIP on alpha"));
    assert!(b.stdout.contains("VIP on beta"));
    let (sa, sb) = (a.tagged("SUM "), b.tagged("SUM "));
    assert_eq!(sa.len(), 4, "alpha printed {sa:?}");
    assert_eq!(sa, sb, "files differ after failover");
    assert!(
        b.stderr.contains("ro=Primary/Unknown"),
        "beta never became Primary"
    );
}
