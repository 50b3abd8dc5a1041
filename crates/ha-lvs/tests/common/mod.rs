//! Helpers shared by the checker tests: a monitor of one service, and waiting for the
//! weights the checker gives its real servers.
// Each test file uses its own subset.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ha_lvs::checker::driver::MemoryTable;
use ha_lvs::checker::{
    CheckSpec, FailureAction, Monitor, MonitorConfig, MonitoredReal, MonitoredService,
};
use ha_lvs::model::*;

/// A monitor of service `svc` (wlc) whose real servers `reals` (weight 1, direct routing) all
/// carry `check` and are quiesced when they fail.
pub fn one_service(svc: ServiceKey, reals: &[SocketAddr], check: CheckSpec) -> Monitor {
    Monitor::new(MonitorConfig {
        services: vec![MonitoredService {
            service: Service::new(svc, Scheduler::Wlc),
            reals: reals
                .iter()
                .map(|&a| MonitoredReal {
                    dest: Destination::new(a, Forward::Route),
                    check: Some(check.clone()),
                    check_addr: None,
                })
                .collect(),
            fallback: None,
            on_failure: FailureAction::Quiesce,
        }],
        start_down: false,
    })
}

/// Wait (up to 5 s) until the table gives each destination of `svc` its weight.
pub async fn wait_weights(mem: &MemoryTable, svc: ServiceKey, want: &[(SocketAddr, u32)]) {
    let weight = |a: SocketAddr| {
        mem.snapshot()
            .iter()
            .find(|v| v.service.key == svc)
            .and_then(|v| v.dests.iter().find(|d| d.addr == a).map(|d| d.weight))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !want.iter().all(|&(a, w)| weight(a) == Some(w)) {
        assert!(
            Instant::now() < deadline,
            "want {want:?}; table: {:#?}",
            mem.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
