//! Temporary measurement.
#![allow(clippy::unwrap_used)]
#[test]
fn measure() {
    let img = testkit::vm::image_available().unwrap();
    let t = testkit::vm::boot_times(&img, 5).unwrap();
    let mut cpu: Vec<f64> = t.iter().map(|x| x.cpu.as_secs_f64()).collect();
    cpu.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "boot wall: min {:.2} med {:.2} max {:.2}; cpu {:?}",
        t[0].wall.as_secs_f64(),
        t[2].wall.as_secs_f64(),
        t[4].wall.as_secs_f64(),
        cpu
    );
}
