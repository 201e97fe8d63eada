//! `nodeagent`: the kube-lite node agent (and, as `nodeagent init …`, the container init).

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("init") {
        // Before any thread exists: the init unshares namespaces.
        nodeagent::init::main(&argv[2..]);
    }
    if argv.get(1).map(String::as_str) == Some(nodeagent::containerd::logger::ARG) {
        // containerd's shim runs us as the log writer of a container (binary:// URI).
        nodeagent::containerd::logger::main(&argv[2..]);
    }
    let cfg = nodeagent::config::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    nodeagent::agent::run_blocking(cfg)
}
