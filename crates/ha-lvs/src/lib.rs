//! IPVS generic-netlink client, declarative reconcile, ipvsadm formats and a shared real-server health checker.
