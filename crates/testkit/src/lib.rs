//! Test rig: network namespaces and a Debian kernel under qemu (dev only).
