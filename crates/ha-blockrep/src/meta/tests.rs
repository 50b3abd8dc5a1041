//! Metadata crash tests: cut power at every step of every update sequence.

use super::*;
use crate::device::{BlockDevice, MemDevice};
use std::sync::Arc;

const DATA: u64 = 64 << 20;

fn md_dev() -> Arc<MemDevice> {
    Arc::new(MemDevice::new(Layout::new(DATA, 4).md_size()))
}

#[tokio::test]
async fn create_then_load() {
    let dev = md_dev();
    let md = Metadata::create(dev.clone(), DATA, 4).await.unwrap();
    let back = Metadata::load(dev).await.unwrap();
    assert_eq!(back.sb, md.sb);
    assert_eq!(back.bitmap().count(), 0);
    assert!(back.dump().contains("la-size-sect 131072"));
}

#[tokio::test]
async fn internal_layout_fits() {
    let l = Layout::internal(16 << 20, DEFAULT_AL_EXTENTS).unwrap();
    assert!(l.data_size + l.md_size() <= 16 << 20);
    assert_eq!(l.data_size % 4096, 0);
    assert!(Layout::internal(8192, 1237).is_err());
}

#[tokio::test]
async fn create_md_power_cut_at_every_step() {
    for n in 0.. {
        let dev = md_dev();
        // Old metadata with a recognisable generation.
        let mut old = Metadata::create(dev.clone(), DATA, 4).await.unwrap();
        old.sb.uuids.current = 0xAAAA;
        old.write_sb().await.unwrap();
        dev.crash_after(n);
        let r = Metadata::create(dev.clone(), DATA, 4).await;
        dev.revive();
        match Metadata::load(dev.clone()).await {
            Ok(md) => assert!(
                md.sb.uuids.current == 0xAAAA
                    || md.sb.uuids.current == superblock::UUID_JUST_CREATED,
                "step {n}: unexpected generation {:x}",
                md.sb.uuids.current
            ),
            Err(Error::Metadata(m)) => assert!(m.contains("no metadata"), "step {n}: {m}"),
            Err(e) => panic!("step {n}: {e}"),
        }
        if r.is_ok() {
            assert!(n > 3, "create-md must take several steps");
            let md = Metadata::load(dev).await.unwrap();
            assert_eq!(md.sb.uuids.current, superblock::UUID_JUST_CREATED);
            break;
        }
    }
}

/// Writes to many extents through a tiny activity log (forcing evictions), marking the blocks
/// dirty as a disconnected Primary does, with superblock updates in between.
/// Returns the blocks whose write was allowed to proceed and the last durable sb generation.
async fn script(md: &mut Metadata, done: &mut Vec<u64>, sb_gen: &mut (u64, u64)) -> Result<()> {
    for i in 0..40u64 {
        let e = (i * 7) % 16;
        let off = e * AL_EXTENT_SIZE + (i % 8) * 4096;
        if !md.al_begin(off, 4096).await? {
            return Err(Error::State("al full".into()));
        }
        md.bitmap().mark_bytes(off, 4096);
        done.push(off / BM_BLOCK_SIZE);
        md.al_end(off, 4096);
        if i % 5 == 4 {
            sb_gen.1 = 0x1000 + i;
            md.sb.uuids.new_current(sb_gen.1);
            md.sb.set(superblock::MDF_CRASHED_PRIMARY, i % 10 == 4);
            md.write_sb().await?;
            sb_gen.0 = sb_gen.1;
        }
        if i == 20 {
            md.write_bitmap().await?;
        }
    }
    md.close_clean().await
}

#[tokio::test]
async fn updates_power_cut_at_every_step() {
    let mut completed = false;
    for n in 0..10_000 {
        let dev = md_dev();
        let mut md = Metadata::create(dev.clone(), DATA, 4).await.unwrap();
        let initial = md.sb.uuids.current;
        let (mut done, mut gen_) = (Vec::new(), (initial, initial));
        dev.crash_after(n);
        let r = script(&mut md, &mut done, &mut gen_).await;
        dev.revive();
        let back = Metadata::load(dev.clone() as DynDevice)
            .await
            .unwrap_or_else(|e| panic!("step {n}: metadata does not load: {e}"));
        for b in &done {
            assert!(back.bitmap().get(*b), "step {n}: dirty block {b} forgotten");
        }
        let cur = back.sb.uuids.current;
        assert!(
            cur == gen_.0 || cur == gen_.1,
            "step {n}: generation {cur:x} is neither {:x} nor {:x}",
            gen_.0,
            gen_.1
        );
        assert!(back.al().extents().is_empty(), "load empties the log");
        if r.is_ok() {
            // Clean close: nothing beyond the dirty blocks themselves.
            let expect: std::collections::BTreeSet<u64> = done.iter().copied().collect();
            assert_eq!(back.bitmap().count(), expect.len() as u64);
            completed = true;
            break;
        }
        assert!(matches!(r, Err(Error::PowerCut)), "step {n}: {r:?}");
    }
    assert!(completed);
}

#[tokio::test]
async fn unclean_shutdown_resyncs_only_al_extents() {
    let dev = md_dev();
    let mut md = Metadata::create(dev.clone(), DATA, 4).await.unwrap();
    assert!(md.al_begin(5 * AL_EXTENT_SIZE + 4096, 4096).await.unwrap());
    md.al_end(5 * AL_EXTENT_SIZE + 4096, 4096);
    dev.power_cut();
    let back = Metadata::load(dev.clone() as DynDevice).await.unwrap();
    let per = AL_EXTENT_SIZE / BM_BLOCK_SIZE;
    assert_eq!(back.bitmap().count(), per);
    assert!(back.bitmap().get(5 * per) && !back.bitmap().get(4 * per));
    // Marks are persisted: a second load sees the same without the log.
    let again = Metadata::load(dev as DynDevice).await.unwrap();
    assert_eq!(again.bitmap().count(), per);
    assert!(again.dump().contains("1024 set"));
    let _ = again.layout().md_size();
    let _: &dyn BlockDevice = &MemDevice::new(1);
}
