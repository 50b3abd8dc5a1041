//! ha-demo: placeholder, replaced by the simulator timeline.
fn main() {}
