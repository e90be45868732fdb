//! Scratch (proxy-perf): apply a script file through netlink in a netns.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut nl = proxy::netlink::Netlink::open(Some(&args[1])).unwrap();
    let script = std::fs::read_to_string(&args[2]).unwrap();
    let t = std::time::Instant::now();
    let r = nl.apply(&script);
    eprintln!("{r:?} in {:?}", t.elapsed());
    eprintln!("chains: {:?}", nl.list_chains("x").map(|v| v.len()));
    eprintln!("sets: {:?}", nl.list_sets("x"));
}
