//! `fluxrelay cluster list`: every entry, valid or not.

use fluxrelay_core::registry::ClusterEntry;

use super::mode;
use super::store::{Store, entries};

fn subscriptions(entry: &ClusterEntry) -> String {
    if entry.subscriptions.iter().any(|s| s.takes_everything()) {
        "every push".to_string()
    } else {
        entry.subscriptions.len().to_string()
    }
}

pub async fn list(store: &Store) -> Result<usize, String> {
    let entries = entries(store).await?;
    println!("NAME\tSERVER\tAUTH\tNAMESPACES\tMODE\tSUBSCRIPTIONS\tSTATE");
    for (name, entry) in &entries {
        match entry {
            Ok(entry) => println!(
                "{name}\t{}\t{}\t{}\t{}\t{}\tvalid",
                entry.server,
                entry.credentials.kind(),
                entry.namespaces.join(","),
                mode(entry),
                subscriptions(entry),
            ),
            Err(problem) => println!("{name}\t-\t-\t-\t-\t-\tinvalid: {problem}"),
        }
    }
    Ok(entries.len())
}
