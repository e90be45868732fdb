//! `cargo run -p dns --release --example bench -- [QUERIES] [CONCURRENCY]`: the DNS benchmark
//! alone, as `rkube bench` runs it.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let queries = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let concurrency = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let report = dns::bench(queries, concurrency).await?;
    println!("{report}");
    Ok(())
}
