//! `strata inspect`: one vault object in readable form or JSON.

use std::process::ExitCode;

use anyhow::Result;
use strata_store::id::ObjectId;
use strata_store::repo::pack_name;

use super::{fmt_time, open, print_json, resolve_point};
use crate::cli::{Global, InspectArgs, InspectKind};

fn need_id(a: &InspectArgs) -> Result<ObjectId> {
    let id =
        a.id.as_deref()
            .ok_or_else(|| strata_store::Error::config("this object kind needs an ID"))?;
    Ok(id.parse()?)
}

pub async fn run(g: &Global, a: InspectArgs) -> Result<ExitCode> {
    let repo = open(g).await?;
    let mut damage_found = false;
    let value = match a.what {
        InspectKind::Config => serde_json::to_value(repo.config())?,
        InspectKind::Point => {
            let at = a.id.as_deref().unwrap_or("latest");
            let at = if at.chars().all(|c| c.is_ascii_digit()) {
                format!("#{at}")
            } else {
                at.to_string()
            };
            let p = resolve_point(&repo, &at).await?;
            let mut v = serde_json::to_value(&p)?;
            v["time"] = fmt_time(p.time_ns).into();
            v
        }
        InspectKind::Pack => {
            let id = need_id(&a)?;
            let size = repo.backend().head(&pack_name(&id)).await?;
            let entries = repo.read_trailer(&id).await?;
            serde_json::json!({ "pack": id, "size": size, "blobs": entries.len(), "entries": entries })
        }
        InspectKind::Index => {
            let id = need_id(&a)?;
            let seg = repo.read_segment(&id).await?;
            serde_json::json!({ "segment": id, "supersedes": seg.supersedes, "entries": seg.entries })
        }
        InspectKind::Page => {
            let id = need_id(&a)?;
            serde_json::to_value(&*repo.load_page(&id).await?)?
        }
        InspectKind::Pass => {
            let seq = match a.id.as_deref() {
                Some(s) => s.parse::<u64>().map_err(|_| {
                    strata_store::Error::config(format!("{s}: a pass is named by a point number"))
                })?,
                None => repo.latest_point().await?.map_or(0, |(p, _)| p.seq + 1),
            };
            // A marker that does not authenticate is reported beside the
            // pass state, not instead of it.
            let (began, damaged) = match repo.load_pass_marker(seq).await {
                Ok(m) => (m.map(|m| fmt_time(m.began_ns)), None),
                Err(e) if e.kind().is_damage() => (None, Some(e.to_string())),
                Err(e) => return Err(e.into()),
            };
            let mut v = match repo.latest_pass_state(seq).await? {
                Some((state, n)) => {
                    let done = state.partitions.iter().filter(|p| p.done).count();
                    let mut v = serde_json::to_value(&state)?;
                    v["state"] = n.into();
                    v["partitions_done"] = done.into();
                    v
                }
                // Stored packs, but stopped before recording progress.
                None if began.is_some() || damaged.is_some() => serde_json::json!({
                    "seq": seq,
                    "state": null,
                }),
                None => {
                    return Err(strata_store::Error::not_found(format!(
                        "no pass for point {seq} has stored anything"
                    ))
                    .into())
                }
            };
            v["began"] = began.into();
            if let Some(e) = damaged {
                v["marker_damaged"] = e.into();
                damage_found = true;
            }
            v
        }
    };
    if g.json {
        print_json(&value)?;
    } else {
        print_human(&value, 0);
    }
    Ok(if damage_found {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Indented key: value lines; long arrays are abbreviated.
fn print_human(v: &serde_json::Value, depth: usize) {
    let pad = "  ".repeat(depth);
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if v.is_object() || v.is_array() {
                    println!("{pad}{k}:");
                    print_human(v, depth + 1);
                } else {
                    println!("{pad}{k}: {v}");
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i == 50 {
                    println!("{pad}… {} more (use --json for all)", items.len() - 50);
                    break;
                }
                println!("{pad}- [{i}]");
                print_human(item, depth + 1);
            }
        }
        other => println!("{pad}{other}"),
    }
}
