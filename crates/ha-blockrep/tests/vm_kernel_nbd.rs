//! Real kernel end to end: two VMs on a UDP link run `blockrepd`; the guest kernel's NBD
//! client puts ext4 on the Primary's export, files are written and synced, the Primary is
//! killed, and the Secondary promotes, mounts and finds the same files (checksums).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use testkit::vm::{self, UdpLink, Vm};

const DISK_MIB: u64 = 48;

/// Shell helpers shared by both guests: `waitfor FILE PATTERN SECONDS [FROM_LINE]`.
const HELPERS: &str = r#"
set -u
waitfor() {
    local file=$1 pat=$2 secs=$3 from=${4:-1} i
    for i in $(seq 1 $((secs * 20))); do
        tail -n +"$from" "$file" 2>/dev/null | grep -q -- "$pat" && return 0
        sleep 0.05
    done
    echo "timeout waiting for '$pat' in $file" >&2
    cat "$file" >&2
    return 1
}
common="--disk /dev/vda --create-md --rate 1G --ping-ms 200 --timeout-ms 1000 --nbd 127.0.0.1:10809"
"#;

/// Primary: wait for the initial sync, put ext4 on the export, write files, sync, crash.
const SCRIPT_A: &str = r#"
/bin/blockrepd $common --node a --primary --force --listen 192.168.61.1:7789 --no-stdin >/tmp/a.log 2>&1 &
pid=$!
waitfor /tmp/a.log 'cs=Connected ro=Primary/Secondary ds=UpToDate/UpToDate' 40
nbd-client 127.0.0.1 10809 /dev/nbd0 -N r0 -b 4096 >&2
# No lazy inode-table / journal init and no atime updates: nothing may write to nbd0 in the
# background after the final sync, or it races the crash below (writes to a dead NBD
# connection can hang the guest's own shutdown).
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/nbd0 >&2
mkdir -p /mnt && mount -o noatime /dev/nbd0 /mnt
for i in 1 2 3; do head -c $((i * 700000)) /dev/urandom >/mnt/f$i; done
echo "written before failover" >/mnt/note
sync
(cd /mnt && sha256sum f1 f2 f3 note) | sed 's/^/SUM /'
# Crash the Primary's engine: no orderly shutdown, the page cache is already on both disks.
kill -9 $pid
echo "A: engine killed" >&2
# The guest's own shutdown must not wait on a block device whose server is gone: detach
# nbd0 (its I/O fails at once) and drop the mount before the VM syncs and powers off.
nbd-client -d /dev/nbd0 >&2 || true
umount -l /mnt || true
"#;

/// Secondary: connect, wait until the peer is gone, promote, mount, checksum.
const SCRIPT_B: &str = r#"
mkfifo /tmp/ctl
/bin/blockrepd $common --node b --connect 192.168.61.1:7789 </tmp/ctl >/tmp/b.log 2>&1 &
exec 3>/tmp/ctl
waitfor /tmp/b.log 'cs=Connected ro=Secondary/Primary ds=UpToDate/UpToDate' 40
n=$(wc -l </tmp/b.log)
waitfor /tmp/b.log 'ro=Secondary/Unknown' 40 $((n + 1))
echo promote >&3
waitfor /tmp/b.log '^OK promote' 10
nbd-client 127.0.0.1 10809 /dev/nbd0 -N r0 -b 4096 >&2
mkdir -p /mnt && mount /dev/nbd0 /mnt
(cd /mnt && sha256sum f1 f2 f3 note) | sed 's/^/SUM /'
grep -c . /mnt/note >/dev/null && echo "VERDICT files readable after failover"
cat /tmp/b.log >&2
"#;

#[test]
fn ext4_on_kernel_nbd_survives_failover() {
    if !testkit::privileged("ext4_on_kernel_nbd_survives_failover") {
        return;
    }
    let Some(img) = vm::image_or_skip("ext4_on_kernel_nbd_survives_failover") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = |name: &str| {
        let p = dir.path().join(name);
        std::fs::File::create(&p)
            .unwrap()
            .set_len(DISK_MIB << 20)
            .unwrap();
        p
    };
    let (la, lb) = UdpLink::pair().unwrap();
    let bin = env!("CARGO_BIN_EXE_blockrepd");
    let vm = |name: &str, end, cidr: &str, script: &str| {
        Vm::builder()
            .image(img.clone())
            .hostname(name)
            .memory_mb(384)
            .binary(bin, "/bin/blockrepd")
            .disk(disk(&format!("{name}.img")))
            .modules(["nbd"])
            .link(end, Some(cidr))
            .command(format!("{HELPERS}\nset -e\n{script}"))
            .timeout(Duration::from_secs(90))
    };
    let (a, b) = vm::run_pair(
        ("A", vm("a", la, "192.168.61.1/24", SCRIPT_A)),
        ("B", vm("b", lb, "192.168.61.2/24", SCRIPT_B)),
    )
    .unwrap();
    assert_eq!(a.exit_code, 0, "primary failed: {}", a.stderr);
    assert_eq!(b.exit_code, 0, "secondary failed: {}", b.stderr);
    let (sa, sb) = (a.tagged("SUM "), b.tagged("SUM "));
    assert_eq!(sa.len(), 4, "A printed {sa:?}");
    assert_eq!(sa, sb, "files differ after failover");
    assert!(b.stdout.contains("VERDICT files readable after failover"));
    assert!(
        b.stderr.contains("ro=Primary/Unknown"),
        "B never became Primary: {}",
        b.stderr
    );
}
