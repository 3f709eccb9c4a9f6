use std::time::Duration;

use clap::Parser;

/// Serves mock agents at http://ADDR/agents/{agent}/api/v1/execute.
#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9100")]
    addr: String,
    /// Answer every call after this many milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let agent =
        agentflow_mock_agent::MockAgent::serve(listener, Duration::from_millis(args.latency_ms))?;
    println!("mock agents on {}", agent.url_template());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
