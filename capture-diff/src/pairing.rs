//! Pairing: which candidate exchange answers which baseline exchange.
//!
//! First by the pair id `capture replay` writes in `_replay.pair_id` (two replays of one
//! recording share them), then by request fingerprint: protocol, method, path, sorted query and
//! canonical body (JSON with sorted keys, else the bytes). Within a fingerprint the k-th
//! baseline exchange in time order pairs with the k-th candidate one. Ties in time are broken
//! by the whole rendered entry, so the result does not depend on input order. What is left is
//! unpaired, on each side; replay entries that were skipped (never sent) take no part.

use std::collections::BTreeMap;

use capture_model::{
    clock::WallClock,
    exchange::Exchange,
    har::{self, ReplayVerdict},
    har_read::ReadEntry,
};
use serde_json::Value;

use crate::endpoint::path_of;

/// The result of [`pair`]: indices into the baseline and candidate slices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    /// (baseline index, candidate index), in baseline order.
    pub pairs: Vec<(usize, usize)>,
    pub unpaired_baseline: Vec<usize>,
    pub unpaired_candidate: Vec<usize>,
    /// Replay entries that were not sent, on each side.
    pub skipped_baseline: usize,
    pub skipped_candidate: usize,
}

/// Pairs `baseline` with `candidate`.
pub fn pair(baseline: &[ReadEntry], candidate: &[ReadEntry]) -> Pairing {
    let mut out = Pairing::default();
    let live = |entries: &[ReadEntry], skipped: &mut usize| -> Vec<usize> {
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                let skip = e
                    .replay
                    .as_ref()
                    .is_some_and(|r| r.verdict == ReplayVerdict::Skipped);
                *skipped += usize::from(skip);
                !skip
            })
            .map(|(i, _)| i)
            .collect()
    };
    let base = live(baseline, &mut out.skipped_baseline);
    let cand = live(candidate, &mut out.skipped_candidate);
    let base_order = OrderKeys::new(baseline);
    let cand_order = OrderKeys::new(candidate);

    // Pass 1: pair ids present on both sides.
    let id = |e: &ReadEntry| e.replay.as_ref().map(|r| r.pair_id.clone());
    let (base_rest, cand_rest) = zip_groups(
        &base,
        &cand,
        |i| id(&baseline[i]),
        |j| id(&candidate[j]),
        &base_order,
        &cand_order,
        &mut out.pairs,
    );
    // Pass 2: request fingerprints.
    let (base_left, cand_left) = zip_groups(
        &base_rest,
        &cand_rest,
        |i| Some(fingerprint(&baseline[i].exchange)),
        |j| Some(fingerprint(&candidate[j].exchange)),
        &base_order,
        &cand_order,
        &mut out.pairs,
    );
    out.pairs.sort_unstable();
    out.unpaired_baseline = base_left;
    out.unpaired_candidate = cand_left;
    out
}

/// Time-order keys: the request start, then the rendered entry (rendered only when needed).
struct OrderKeys<'a> {
    entries: &'a [ReadEntry],
}

impl<'a> OrderKeys<'a> {
    fn new(entries: &'a [ReadEntry]) -> Self {
        Self { entries }
    }

    fn sort(&self, indices: &mut [usize]) {
        const UNIX: WallClock = WallClock::with_offset_ns(0);
        let mut keyed: Vec<(u64, Option<String>, usize)> = indices
            .iter()
            .map(|&i| (self.entries[i].exchange.timing.request_start_ns, None, i))
            .collect();
        keyed.sort_by_key(|k| k.0);
        // Render the entries whose start time ties, and only those.
        let ties: Vec<bool> = (0..keyed.len())
            .map(|k| {
                (k > 0 && keyed[k - 1].0 == keyed[k].0)
                    || (k + 1 < keyed.len() && keyed[k + 1].0 == keyed[k].0)
            })
            .collect();
        for (k, tie) in ties.into_iter().enumerate() {
            if tie {
                keyed[k].1 = Some(har::entry_json_line(
                    &self.entries[keyed[k].2].exchange,
                    &UNIX,
                ));
            }
        }
        keyed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (slot, (_, _, i)) in indices.iter_mut().zip(keyed) {
            *slot = i;
        }
    }
}

/// Groups both sides by `key`, pairs the k-th of each group in time order, and returns what
/// was not paired (entries without a key, and the surplus of each group), in index order.
fn zip_groups<K: Ord>(
    base: &[usize],
    cand: &[usize],
    base_key: impl Fn(usize) -> Option<K>,
    cand_key: impl Fn(usize) -> Option<K>,
    base_order: &OrderKeys<'_>,
    cand_order: &OrderKeys<'_>,
    pairs: &mut Vec<(usize, usize)>,
) -> (Vec<usize>, Vec<usize>) {
    let mut groups: BTreeMap<K, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    let mut base_left = Vec::new();
    let mut cand_left = Vec::new();
    for &i in base {
        match base_key(i) {
            Some(k) => groups.entry(k).or_default().0.push(i),
            None => base_left.push(i),
        }
    }
    for &j in cand {
        match cand_key(j) {
            Some(k) => groups.entry(k).or_default().1.push(j),
            None => cand_left.push(j),
        }
    }
    for (_, (mut b, mut c)) in groups {
        base_order.sort(&mut b);
        cand_order.sort(&mut c);
        let n = b.len().min(c.len());
        pairs.extend(b.iter().copied().zip(c.iter().copied()).take(n));
        base_left.extend_from_slice(&b[n..]);
        cand_left.extend_from_slice(&c[n..]);
    }
    base_left.sort_unstable();
    cand_left.sort_unstable();
    (base_left, cand_left)
}

/// Protocol, method, path, sorted query and canonical body, NUL-separated.
pub fn fingerprint(ex: &Exchange) -> Vec<u8> {
    let target = ex.request.target.as_str();
    let mut query: Vec<&str> = target
        .split_once('?')
        .map(|(_, q)| q.split_once('#').map_or(q, |(q, _)| q))
        .map(|q| q.split('&').filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    query.sort_unstable();
    let mut out = Vec::new();
    for part in [ex.protocol.as_str(), &ex.request.method, path_of(target)] {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(query.join("&").as_bytes());
    out.push(0);
    let body = &ex.request.body.data;
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => canonical_json(&value, &mut out),
        Err(_) => out.extend_from_slice(body),
    }
    out
}

/// JSON with object keys sorted (whatever order serde_json's map keeps).
fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (n, key) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::from(key.as_str()).to_string().as_bytes());
                out.push(b':');
                if let Some(v) = map.get(key) {
                    canonical_json(v, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (n, v) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                canonical_json(v, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use capture_model::{
        fixtures::representative_redacted,
        har::{Replay, ReplayVerdict},
    };
    use proptest::prelude::*;

    use super::*;

    pub(crate) fn entry(target: &str, start: u64, body: &str, status: u16) -> ReadEntry {
        let mut ex = representative_redacted();
        ex.request.method = "GET".into();
        ex.request.target = target.into();
        ex.request.body.data = body.as_bytes().to_vec();
        ex.timing.request_start_ns = start;
        if let Some(r) = &mut ex.response {
            r.status = status;
        }
        ReadEntry {
            exchange: ex,
            replay: None,
            line: 0,
        }
    }

    fn with_id(mut e: ReadEntry, id: &str, verdict: ReplayVerdict) -> ReadEntry {
        e.replay = Some(Replay {
            pair_id: id.into(),
            source: "f:1".into(),
            target: "http://t".into(),
            verdict,
            reason: None,
            injected: vec![],
        });
        e
    }

    #[test]
    fn fingerprint_ignores_query_order_and_json_key_order() {
        let a = entry("/x?b=2&a=1", 0, r#"{"k":1,"j":[1,{"z":0,"y":1}]}"#, 200);
        let b = entry(
            "/x?a=1&b=2#frag",
            5,
            r#"{ "j":[1,{"y":1,"z":0}],"k":1}"#,
            200,
        );
        assert_eq!(fingerprint(&a.exchange), fingerprint(&b.exchange));
        let c = entry("/x?a=1&b=3", 0, r#"{"k":1,"j":[1,{"z":0,"y":1}]}"#, 200);
        assert_ne!(fingerprint(&a.exchange), fingerprint(&c.exchange));
    }

    #[test]
    fn kth_with_kth_in_time_order_and_unpaired_kept() {
        let baseline = vec![
            entry("/a", 30, "", 200),
            entry("/a", 10, "", 200),
            entry("/b", 5, "", 200),
            entry("/only-base", 1, "", 200),
        ];
        let candidate = vec![
            entry("/a", 7, "", 200),
            entry("/b", 3, "", 200),
            entry("/a", 2, "", 200),
            entry("/only-cand", 1, "", 200),
        ];
        let p = pair(&baseline, &candidate);
        assert_eq!(p.pairs, vec![(0, 0), (1, 2), (2, 1)]);
        assert_eq!(p.unpaired_baseline, vec![3]);
        assert_eq!(p.unpaired_candidate, vec![3]);
    }

    #[test]
    fn pair_ids_first_and_skipped_entries_left_out() {
        let baseline = vec![
            with_id(entry("/a", 1, "", 200), "1", ReplayVerdict::Sent),
            with_id(entry("/a", 2, "", 200), "2", ReplayVerdict::Sent),
            with_id(entry("/s", 3, "", 200), "3", ReplayVerdict::Skipped),
        ];
        // Time order would pair 0-0 and 1-1; the ids say otherwise.
        let candidate = vec![
            with_id(entry("/a", 1, "", 200), "2", ReplayVerdict::Sent),
            with_id(entry("/a", 2, "", 200), "1", ReplayVerdict::Sent),
            with_id(entry("/s", 3, "", 200), "3", ReplayVerdict::Skipped),
        ];
        let p = pair(&baseline, &candidate);
        assert_eq!(p.pairs, vec![(0, 1), (1, 0)]);
        assert_eq!((p.skipped_baseline, p.skipped_candidate), (1, 1));
        assert!(p.unpaired_baseline.is_empty() && p.unpaired_candidate.is_empty());
    }

    fn entries() -> impl Strategy<Value = Vec<ReadEntry>> {
        proptest::collection::vec(
            (
                prop_oneof![Just("/a"), Just("/b?x=1"), Just("/c")],
                0_u64..4,
                prop_oneof![Just(""), Just("{\"a\":1}")],
                prop_oneof![Just(200_u16), Just(500)],
            )
                .prop_map(|(t, s, b, st)| entry(t, s, b, st)),
            0..12,
        )
    }

    /// The pairs as rendered entries, so a permutation can be compared.
    fn rendered(p: &Pairing, b: &[ReadEntry], c: &[ReadEntry]) -> Vec<(String, String)> {
        const UNIX: WallClock = WallClock::with_offset_ns(0);
        let line = |e: &ReadEntry| har::entry_json_line(&e.exchange, &UNIX);
        let mut out: Vec<_> = p
            .pairs
            .iter()
            .map(|&(i, j)| (line(&b[i]), line(&c[j])))
            .collect();
        out.sort();
        out
    }

    proptest! {
        #[test]
        fn pairing_does_not_depend_on_input_order(
            b in entries(),
            c in entries(),
            seed in any::<u64>(),
        ) {
            let p = pair(&b, &c);
            let mut rb = b.clone();
            let mut rc = c.clone();
            // A deterministic shuffle from the seed.
            let mut s = seed | 1;
            for v in [&mut rb, &mut rc] {
                for i in (1..v.len()).rev() {
                    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                    let j = usize::try_from(s % (i as u64 + 1)).unwrap();
                    v.swap(i, j);
                }
            }
            let q = pair(&rb, &rc);
            prop_assert_eq!(rendered(&p, &b, &c), rendered(&q, &rb, &rc));
            prop_assert_eq!(p.unpaired_baseline.len(), q.unpaired_baseline.len());
            prop_assert_eq!(
                p.pairs.len() + p.unpaired_baseline.len(),
                b.len()
            );
            prop_assert_eq!(
                p.pairs.len() + p.unpaired_candidate.len(),
                c.len()
            );
        }
    }
}
