//! Putting the trees under `.moss/root` back in order after a crash or a
//! mistake, without ever losing one.
//!
//! Every tree carries its id in `usr/.stateID`, so a tree left under the wrong
//! name by an interrupted exchange is recognised and moved to its own. What
//! lifeboat deletes here is only what it can prove to be its own leftover: the
//! staging tree (never trusted), a tree it was pruning once the index no longer
//! names it, an empty slot, and a second copy of a transaction whose content was
//! checked file by file against that transaction's layout. Anything else — a
//! tree the index does not know, a copy that differs — is kept: a tree with an
//! id of its own is adopted into the index ([`crate::recover`]); one that cannot
//! be is set aside under `kept-<name>-<time>` or left where it is, and reported.
//!
//! A [`Plan`] is worked out first and carried out only when asked: a dry run
//! reports what it would do and changes nothing.

use std::os::fd::{AsFd, BorrowedFd};

use crate::error::{IoContext, Result};
use crate::index::StateIndex;
use crate::root::{parse_id, SystemRoot};
use lifeboat_fs as fsutil;

/// Name prefix of a tree a prune is removing (renamed before the index drops it).
pub const PRUNING: &str = "pruning-";
/// Name prefix of a tree set aside: kept, never used, never deleted by lifeboat.
pub const KEPT: &str = "kept-";

/// One thing reconciliation does to a slot of `.moss/root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Remove `name` (a leftover of lifeboat's own, `why` says which).
    Remove { name: String, why: String },
    /// Rename `from` to `to` (a tree moved to its own slot, or set aside).
    Rename { from: String, to: String, why: String },
    /// Record the tree in `name` (its `.stateID` is `id`, the index lacks it).
    Adopt { name: String, id: u64 },
    /// Nothing is done; the user is told.
    Report { name: String, why: String },
}

/// What reconciliation found and will do, in order.
#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
}

impl Plan {
    /// The trees to adopt: `(slot name, id)`.
    pub fn adoptions(&self) -> Vec<(String, u64)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Adopt { name, id } => Some((name.clone(), *id)),
                _ => None,
            })
            .collect()
    }

    /// One line per action, in the words of a dry run (`would`) or of one done.
    pub fn describe(&self, root: &SystemRoot, dry_run: bool) -> Vec<String> {
        let at = |n: &str| root.path.join(".moss/root").join(n).display().to_string();
        let (rm, mv, adopt) =
            if dry_run { ("would remove", "would move", "would adopt") } else { ("removed", "moved", "adopted") };
        self.actions
            .iter()
            .map(|a| match a {
                Action::Remove { name, why } => format!("{rm} {} ({why})", at(name)),
                Action::Rename { from, to, why } => format!("{mv} {} to {} ({why})", at(from), at(to)),
                Action::Adopt { name, id } => {
                    format!("{adopt} {} as transaction {id} (its tree was not in the index)", at(name))
                }
                Action::Report { name, why } => format!("kept {}: {why}", at(name)),
            })
            .collect()
    }
}

/// What the slot `name` of `.moss/root` holds.
fn tree_id(trees: BorrowedFd, name: &str) -> Option<u64> {
    SystemRoot::tree_id_at(trees, format!("{name}/usr").as_bytes())
}

/// A name to set `name` aside under: `kept-<name>-<seconds>`, unused.
pub fn aside_name(trees: BorrowedFd, name: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = format!("{KEPT}{name}-{now}");
    let mut cand = base.clone();
    let mut n = 1;
    while fsutil::lstat_at(trees, cand.as_bytes()).ok().flatten().is_some() {
        n += 1;
        cand = format!("{base}.{n}");
    }
    cand
}

/// Whether the tree at `.moss/root/<name>/usr` holds exactly transaction
/// `id`'s layout — every entry's metadata and attributes, every file's content
/// hashed. Only such a copy is ever removed as a duplicate.
pub fn same_content(root: &SystemRoot, idx: &StateIndex, name: &str, id: u64) -> bool {
    let Some(layout) = idx.layout(id) else { return false };
    let Ok(tree) = fsutil::open_dir_beneath(root.fd(), format!(".moss/root/{name}/usr").as_bytes()) else {
        return false;
    };
    let Ok(store) = root.store(false) else { return false };
    // Every file hashed and every entry's attributes listed: a copy is removed
    // only when nothing of it differs, an attribute added included.
    let opts = crate::verify::Options { full: true, unlisted: root.unlisted(), ..Default::default() };
    crate::verify::check(tree.as_fd(), &layout, &store, opts, None).is_ok_and(|r| r.diffs.is_empty())
}

/// Works out what to do with every slot of `.moss/root` (see the module doc).
/// On a moss root nothing: the trees are moss's.
pub fn plan(root: &SystemRoot, idx: &StateIndex) -> Result<Plan> {
    let mut plan = Plan::default();
    if root.is_moss() {
        return Ok(plan);
    }
    let rootp = root.path.join(".moss/root");
    let Ok(d) = root.trees_dir() else {
        return Ok(plan);
    };
    let trees = d.as_fd();
    // What /usr says it is: a copy of it elsewhere is removed only when its
    // content is proven to be that transaction's, never by the id alone.
    let active = root.active_id();
    let mut names: Vec<String> =
        fsutil::list_dir(trees).ctx("list", &rootp)?.into_iter().filter_map(|n| String::from_utf8(n).ok()).collect();
    // Numeric slots in id order, so that a move into a free slot is seen by
    // the slots after it.
    names.sort_by_key(|n| (parse_id(n).is_none(), parse_id(n).unwrap_or(0), n.clone()));
    // Slots taken once the plan has run (a move fills one).
    let mut taken: Vec<String> = names.clone();
    let mut adopted: Vec<u64> = Vec::new();
    for name in names {
        if name == "staging" {
            plan.actions.push(Action::Remove { name, why: "a staging tree left by an interrupted run".into() });
            continue;
        }
        // Whatever is not a directory (a symlink, a file) is nobody's tree
        // lifeboat knows: said, left alone.
        let is_dir = fsutil::lstat_at(trees, name.as_bytes())
            .ok()
            .flatten()
            .is_some_and(|st| st.st_mode & lifeboat_fs::libc_mode::S_IFMT == lifeboat_fs::libc_mode::S_IFDIR);
        if !is_dir {
            plan.actions.push(Action::Report { name, why: "is not a directory; not a tree of lifeboat's".into() });
            continue;
        }
        if let Some(n) = name.strip_prefix(PRUNING).and_then(parse_id) {
            let slot = n.to_string();
            // Lifeboat's only if it is transaction n's tree and n is an id
            // this index handed out and no longer has.
            let ours = tree_id(trees, &name) == Some(n) && n < idx.next_id();
            if !idx.contains(n) && ours {
                plan.actions.push(Action::Remove { name, why: format!("transaction {n} was pruned") });
            } else if !idx.contains(n) {
                plan.actions.push(Action::Report {
                    name,
                    why: format!("not a tree lifeboat was pruning (not transaction {n}'s, or not an id it handed out)"),
                });
            } else if !taken.contains(&slot) {
                taken.push(slot.clone());
                plan.actions.push(Action::Rename {
                    from: name,
                    to: slot,
                    why: format!("a prune was interrupted before the index dropped transaction {n}: kept"),
                });
            } else {
                plan.actions.push(Action::Report {
                    name,
                    why: format!("transaction {n} was being pruned, and its slot is taken; remove it by hand"),
                });
            }
            continue;
        }
        let Some(dir_id) = parse_id(&name) else {
            continue; // kept-*, unmanaged-*, a user's own: not ours to judge
        };
        let slot_fd = fsutil::open_dir_at(trees, name.as_bytes()).ctx("open", rootp.join(&name))?;
        let has_usr = fsutil::lstat_at(slot_fd.as_fd(), b"usr").ctx("stat", rootp.join(&name))?.is_some();
        if !has_usr {
            if fsutil::list_dir(slot_fd.as_fd()).ctx("list", rootp.join(&name))?.is_empty() {
                plan.actions.push(Action::Remove { name, why: "an empty slot".into() });
            } else {
                plan.actions.push(Action::Report { name, why: "has no usr tree; not lifeboat's".into() });
            }
            continue;
        }
        let Some(real) = tree_id(trees, &name) else {
            plan.actions.push(Action::Report {
                name,
                why: "its tree has no readable usr/.stateID: lifeboat cannot tell which transaction it is".into(),
            });
            continue;
        };
        // Where the tree belongs; whether another tree of that transaction is
        // already there (the active one, or its own slot).
        let own = real.to_string();
        let elsewhere = active == Some(real) || (real != dir_id && taken.contains(&own));
        if elsewhere {
            let what = if active == Some(real) { "the active /usr".to_string() } else { format!(".moss/root/{real}") };
            if idx.contains(real) && same_content(root, idx, &name, real) {
                plan.actions.push(Action::Remove {
                    name,
                    why: format!("a second copy of transaction {real}, which is {what}; checked file by file"),
                });
            } else {
                plan.actions.push(Action::Report {
                    name,
                    why: format!(
                        "its .stateID says transaction {real}, whose tree is {what}, but its content is not that \
                         transaction's"
                    ),
                });
            }
            continue;
        }
        let at = if real != dir_id {
            taken.retain(|t| *t != name);
            taken.push(own.clone());
            plan.actions.push(Action::Rename {
                from: name,
                to: own.clone(),
                why: format!("transaction {real}'s tree, left under another name by an interrupted exchange"),
            });
            own
        } else {
            name
        };
        if !idx.contains(real) && !adopted.contains(&real) {
            adopted.push(real);
            plan.actions.push(Action::Adopt { name: at, id: real });
        }
    }
    Ok(plan)
}

/// Carries out the removals and renames of `plan` (adoptions are the
/// caller's: they write the index). A removal that cannot finish (a mount
/// point inside the tree) is said and the rest goes on: returns what to say.
pub fn apply(root: &SystemRoot, plan: &Plan) -> Result<Vec<String>> {
    let rootp = root.path.join(".moss/root");
    let mut notes = Vec::new();
    let Ok(d) = root.trees_dir() else {
        return Ok(notes);
    };
    for a in &plan.actions {
        match a {
            Action::Remove { name, .. } => {
                crate::failpoint::hit("reconcile-remove");
                if let Err(e) = fsutil::remove_tree_at(d.as_fd(), name.as_bytes()) {
                    notes.push(format!("could not remove all of {}: {e}", rootp.join(name).display()));
                }
            }
            Action::Rename { from, to, .. } => {
                crate::failpoint::hit("reconcile-move");
                fsutil::rename_noreplace(d.as_fd(), from.as_bytes(), d.as_fd(), to.as_bytes())
                    .ctx("move", rootp.join(from))?;
            }
            Action::Adopt { .. } | Action::Report { .. } => {}
        }
    }
    if plan.actions.iter().any(|a| matches!(a, Action::Remove { .. } | Action::Rename { .. })) {
        fsutil::fsync(d.as_fd()).ctx("sync", &rootp)?;
    }
    Ok(notes)
}
