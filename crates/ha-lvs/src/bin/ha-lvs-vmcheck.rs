//! Small driver of the IPVS client for tests against a real kernel (run inside the test VM).
//!
//! ```text
//! ha-lvs-vmcheck apply FILE        reconcile the kernel table to the ipvsadm rules in FILE
//! ha-lvs-vmcheck save              print the table in the `ipvsadm -S -n` format
//! ha-lvs-vmcheck list [FORMAT]     print `ipvsadm -L -n` (FORMAT: stats rate thresholds persistent-conn tun-info)
//! ha-lvs-vmcheck errors            provoke kernel refusals and print their classification
//! ha-lvs-vmcheck timeouts T F U    set then print connection timeouts
//! ha-lvs-vmcheck flush             delete every service
//! ha-lvs-vmcheck agent FILE        run the director resource (start/monitor/stop) on FILE's table
//! ha-lvs-vmcheck checker           health checker driving the kernel table from a local server
//! ```

use std::process::ExitCode;

use ha_lvs::ipvsadm::{
    ListFormat, ListOptions, SaveOptions, parse_rules, render_list, write_rules,
};
use ha_lvs::model::*;
use ha_lvs::netlink::{IpvsClient, Request};
use ha_lvs::{Error, reconcile};

fn run(args: &[String]) -> Result<(), Error> {
    let mut c = IpvsClient::connect()?;
    match args.first().map(String::as_str) {
        Some("apply") => {
            let path = args
                .get(1)
                .ok_or_else(|| Error::invalid("apply needs a file"))?;
            let text =
                std::fs::read_to_string(path).map_err(|e| Error::io(format!("read {path}"), e))?;
            let table = parse_rules(&text, path)?;
            let changes = reconcile::apply(&mut c, &table)?;
            println!("changes={}", changes.len());
        }
        Some("save") => print!("{}", write_rules(&c.current()?, SaveOptions::default())),
        Some("list") => {
            let format = match args.get(1).map(String::as_str) {
                None => ListFormat::Default,
                Some("stats") => ListFormat::Stats,
                Some("rate") => ListFormat::Rate,
                Some("thresholds") => ListFormat::Thresholds,
                Some("persistent-conn") => ListFormat::PersistentConn,
                Some("tun-info") => ListFormat::TunInfo,
                Some(f) => return Err(Error::invalid(format!("unknown list format {f}"))),
            };
            let info = c.info()?;
            let table = c.table()?;
            print!(
                "{}",
                render_list(
                    &info,
                    &table,
                    ListOptions {
                        format,
                        ..Default::default()
                    }
                )
            );
        }
        Some("dump") => {
            for e in c.table()? {
                println!("{e:?}");
            }
        }
        Some("flush") => c.request(Request::Flush)?,
        Some("timeouts") => {
            let n = |i: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
            c.request(Request::SetTimeouts(Timeouts {
                tcp: n(1),
                tcp_fin: n(2),
                udp: n(3),
            }))?;
            let t = c.timeouts()?;
            println!(
                "Timeout (tcp tcpfin udp): {} {} {}",
                t.tcp, t.tcp_fin, t.udp
            );
        }
        Some("errors") => errors(&mut c)?,
        Some("agent") => {
            let path = args
                .get(1)
                .ok_or_else(|| Error::invalid("agent needs a file"))?;
            let text =
                std::fs::read_to_string(path).map_err(|e| Error::io(format!("read {path}"), e))?;
            agent(parse_rules(&text, path)?)?;
        }
        Some("checker") => checker()?,
        Some("daemon") => {
            c.request(Request::NewDaemon(SyncDaemon {
                state: DaemonState::Master,
                mcast_ifn: args.get(1).cloned().unwrap_or_else(|| "lo".into()),
                sync_id: 7,
                sync_maxlen: 0,
                mcast_group: None,
                mcast_port: 0,
                mcast_ttl: 0,
            }))?;
            for d in c.daemons()? {
                println!(
                    "{:?} {} syncid={} maxlen={} group={:?} port={} ttl={}",
                    d.state,
                    d.mcast_ifn,
                    d.sync_id,
                    d.sync_maxlen,
                    d.mcast_group,
                    d.mcast_port,
                    d.mcast_ttl
                );
            }
            c.request(Request::DelDaemon(DaemonState::Master))?;
            println!("after_stop={}", c.daemons()?.len());
            match c.request(Request::DelDaemon(DaemonState::Master)) {
                Err(Error::Kernel(k)) => println!("stop_again={:?}", k.kind),
                other => println!("stop_again={other:?}"),
            }
        }
        Some("daemons") => {
            for d in c.daemons()? {
                println!("{:?} {} syncid={}", d.state, d.mcast_ifn, d.sync_id);
            }
        }
        Some("zero") => {
            c.request(Request::Zero(None))?;
            println!("zeroed");
        }
        _ => {
            return Err(Error::invalid(
                "usage: ha-lvs-vmcheck apply FILE | save | list [FORMAT] | errors | timeouts T F U | flush",
            ));
        }
    }
    Ok(())
}

fn errors(c: &mut IpvsClient) -> Result<(), Error> {
    let key = ServiceKey::tcp("10.9.0.1:80".parse().map_err(|_| Error::invalid("addr"))?);
    let missing = ServiceKey::tcp("10.9.0.2:80".parse().map_err(|_| Error::invalid("addr"))?);
    let dest = Destination::new(
        "10.9.1.1:80".parse().map_err(|_| Error::invalid("addr"))?,
        Forward::Masq,
    );
    let other = Destination::new(
        "10.9.1.2:80".parse().map_err(|_| Error::invalid("addr"))?,
        Forward::Masq,
    );
    let svc = Service::new(key, Scheduler::Rr);
    let mut bad_sched = Service::new(
        ServiceKey::tcp("10.9.0.3:80".parse().map_err(|_| Error::invalid("addr"))?),
        Scheduler::Rr,
    );
    bad_sched.scheduler = Scheduler::Other("nosuchsched".into());
    let reqs = vec![
        ("add_service", Request::NewService(svc.clone())),
        ("add_service_again", Request::NewService(svc.clone())),
        ("add_dest", Request::NewDest(key, dest)),
        ("add_dest_again", Request::NewDest(key, dest)),
        (
            "edit_missing_service",
            Request::SetService(Service::new(missing, Scheduler::Rr)),
        ),
        ("del_missing_service", Request::DelService(missing)),
        ("add_dest_missing_service", Request::NewDest(missing, dest)),
        ("edit_missing_dest", Request::SetDest(key, other)),
        ("del_missing_dest", Request::DelDest(key, other.addr)),
        ("unknown_scheduler", Request::NewService(bad_sched)),
        ("del_service", Request::DelService(key)),
    ];
    let only: Vec<Request> = reqs.iter().map(|(_, r)| r.clone()).collect();
    let results = c.execute(&only)?;
    for ((name, _), r) in reqs.iter().zip(results) {
        match r {
            Ok(()) => println!("{name}=ok"),
            Err(e) => println!("{name}={:?} errno={} msg={}", e.kind, e.errno, e),
        }
    }
    match c.service(&missing) {
        Err(Error::Kernel(e)) => println!(
            "get_missing_service={:?} errno={} msg={}",
            e.kind, e.errno, e
        ),
        other => println!("get_missing_service={other:?}"),
    }
    println!("dests_of_missing_service={:?}", c.dests(&missing)?);
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))
}

fn agent(table: Table) -> Result<(), Error> {
    use ha_core::resource::Resource;
    let r = ha_lvs::agent::DirectorResource::new(ha_core::ResourceId("lvs".into()), table);
    runtime()?.block_on(async {
        println!("monitor={:?}", r.monitor().await);
        println!("start={:?}", r.start().await);
        println!("monitor={:?}", r.monitor().await);
        println!("start={:?}", r.start().await);
        println!("stop={:?}", r.stop().await);
        println!("monitor={:?}", r.monitor().await);
    });
    Ok(())
}

fn checker() -> Result<(), Error> {
    use ha_lvs::checker::driver::Checker;
    use ha_lvs::checker::{
        CheckKind, CheckSpec, FailureAction, Monitor, MonitorConfig, MonitoredReal,
        MonitoredService,
    };
    use std::time::Duration;
    let rt = runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("listen", e))?;
        let real = listener
            .local_addr()
            .map_err(|e| Error::io("local addr", e))?;
        let key = ServiceKey::tcp(
            "10.0.0.100:80"
                .parse()
                .map_err(|_| Error::invalid("addr"))?,
        );
        let spec = CheckSpec {
            kind: CheckKind::Connect,
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
        };
        let cfg = MonitorConfig {
            services: vec![MonitoredService {
                service: Service::new(key, Scheduler::Wrr),
                reals: vec![MonitoredReal {
                    dest: Destination::new(real, Forward::Masq).with_weight(5),
                    check: Some(spec),
                    check_addr: None,
                }],
                fallback: None,
                on_failure: FailureAction::Quiesce,
            }],
            start_down: false,
        };
        let ch = Checker::spawn(Monitor::new(cfg), IpvsClient::connect()?)?;
        let accept = tokio::spawn(async move {
            loop {
                if listener.accept().await.is_err() {
                    return;
                }
            }
        });
        let mut c = IpvsClient::connect()?;
        let weight = |c: &mut IpvsClient| -> Result<Option<u32>, Error> {
            Ok(c.dests(&key)?.first().map(|d| d.dest.weight))
        };
        tokio::time::sleep(Duration::from_millis(800)).await;
        println!("checker_up_weight={:?}", weight(&mut c)?);
        accept.abort();
        let _ = accept.await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        println!("checker_down_weight={:?}", weight(&mut c)?);
        ch.stop().await?;
        Ok::<(), Error>(())
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ha-lvs-vmcheck: {e}");
            ExitCode::FAILURE
        }
    }
}
