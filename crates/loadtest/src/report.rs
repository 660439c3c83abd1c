//! The printed rows.

use crate::measure::{pct, Run};

pub(crate) fn print_row(name: &str, run: &mut Run) {
    let rate = run.cycles as f64 / run.elapsed.as_secs_f64();
    let (a50, a99, a999) = (
        pct(&mut run.invite_to_received, 0.5),
        pct(&mut run.invite_to_received, 0.99),
        pct(&mut run.invite_to_received, 0.999),
    );
    let (b50, b99, b999) = (
        pct(&mut run.accept_to_accepted, 0.5),
        pct(&mut run.accept_to_accepted, 0.99),
        pct(&mut run.accept_to_accepted, 0.999),
    );
    println!(
        "| {name} | {rate:.0} | {a50:.2} / {a99:.2} / {a999:.2} | {b50:.2} / {b99:.2} / {b999:.2} | {:.0}% | {} MiB |",
        run.cpu_seconds / run.elapsed.as_secs_f64() * 100.0,
        run.rss_kib / 1024
    );
}
