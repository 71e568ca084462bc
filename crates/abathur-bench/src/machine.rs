//! The machine line printed with every run: cores, CPU model and the SQLite linked (or, for
//! the PostgreSQL scenarios, the server's version and settings).

/// Cores, CPU model and SQLite version, in one line.
pub fn describe() -> String {
    format!(
        "{}, SQLite {} (one libsqlite3-sys, bundled, shared by sqlx and rusqlite)",
        cpu(),
        rusqlite::version()
    )
}

/// Cores, CPU model and the PostgreSQL server (`server`, its version and settings), in one
/// line.
pub fn describe_pg(server: &str) -> String {
    format!("{}, {server}", cpu())
}

/// Cores and CPU model.
fn cpu() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    format!("{cores} cores, {cpu}")
}
