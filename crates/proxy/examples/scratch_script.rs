//! Scratch (proxy-perf): write the benchmark's full and partial scripts to files.
use proxy::bench::{synthetic_service, synthetic_slice};
use proxy::{Cache, Nft, Proxier, RuleConfig};
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(10000);
    let config = RuleConfig {
        node_name: "node-0".into(),
        cluster_cidrs: vec!["10.42.0.0/16".into()],
        node_ips: vec!["192.168.0.10".parse().unwrap()],
        ..RuleConfig::default()
    };
    let mut cache = Cache::default();
    for i in 0..n {
        cache.upsert_service(&synthetic_service(i));
        cache.upsert_slice(&synthetic_slice(i, 10, 0));
    }
    cache.take_dirty();
    let t = std::time::Instant::now();
    let p = Proxier::new("rkube-bench", config.clone(), Nft::default());
    let desired: Vec<_> = cache
        .service_keys()
        .into_iter()
        .map(|k| {
            let d = cache.desired(&k, &config);
            (k, d)
        })
        .collect();
    let s = p.full_script(&desired);
    eprintln!("generate {:?}", t.elapsed());
    std::fs::write("/tmp/pp-full.nft", &s).unwrap();
}
