//! The noise model: per endpoint and field, how often a field is present and how often it
//! differs when the same traffic meets the same version twice (A/A).
//!
//! Learned from two baseline runs ([`NoiseModel::learn`]), merged across runs
//! ([`NoiseModel::merge`]), stored as JSON. The filter that uses it is twitter/diffy's
//! (Apache-2.0; `DifferencesFilterFactory` and `JoinedField` in `ai.diffy.analysis`): a field's
//! A/B differences are real when there are more of them than A/A differences, and their gap is
//! above both a relative threshold (|raw − noise| / (raw + noise), in percent; diffy's default
//! 20) and an absolute one (|raw − noise| / requests to the endpoint, in percent; diffy's
//! default 0.03). Both comparisons are strict, as in diffy's filter. Our A/A and A/B runs may
//! hold different numbers of pairs, so the A/A count is first scaled to the A/B pairs.

use std::collections::{BTreeMap, BTreeSet};

use capture_model::har_read::ReadEntry;
use serde::{Deserialize, Serialize};

use crate::{DiffOptions, endpoint::Endpoint, fields::Doc, pairing::pair};

/// A/A statistics of every endpoint, keyed by [`Endpoint::key`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoiseModel {
    /// Format of this object; 1.
    pub noise_model: u32,
    pub endpoints: BTreeMap<String, EndpointNoise>,
}

/// A/A statistics of one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointNoise {
    /// Conclusive A/A pairs seen.
    pub pairs: u64,
    pub fields: BTreeMap<String, FieldNoise>,
}

/// A/A statistics of one field of one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldNoise {
    /// Pairs whose first side has the field.
    pub present: u64,
    /// Pairs where the field differs.
    pub differs: u64,
}

impl NoiseModel {
    /// An empty model.
    pub fn new() -> Self {
        Self {
            noise_model: 1,
            endpoints: BTreeMap::new(),
        }
    }

    /// Learns from `a` and `b`, two runs of the same traffic against the same version, with
    /// default options.
    pub fn learn(a: &[ReadEntry], b: &[ReadEntry]) -> Self {
        Self::learn_with(a, b, &DiffOptions::default())
    }

    /// [`Self::learn`] with `opts` (its extra volatile headers).
    pub fn learn_with(a: &[ReadEntry], b: &[ReadEntry], opts: &DiffOptions) -> Self {
        let mut model = Self::new();
        for (i, j) in pair(a, b).pairs {
            let (x, y) = (&a[i].exchange, &b[j].exchange);
            if crate::inconclusive_reason(x)
                .or_else(|| crate::inconclusive_reason(y))
                .is_some()
            {
                continue;
            }
            let (Some(dx), Some(dy)) = (Doc::of(x), Doc::of(y)) else {
                continue;
            };
            let endpoint = model.endpoints.entry(Endpoint::of(x).key()).or_default();
            endpoint.pairs += 1;
            for path in dx.present_paths() {
                endpoint.fields.entry(path).or_default().present += 1;
            }
            let differing: BTreeSet<String> =
                crate::fields::diff_docs(&dx, &dy, &opts.volatile_headers)
                    .into_iter()
                    .map(|f| f.path)
                    .collect();
            for path in differing {
                endpoint.fields.entry(path).or_default().differs += 1;
            }
        }
        model
    }

    /// Adds `other`'s counts to this model's.
    pub fn merge(&mut self, other: &Self) {
        for (key, theirs) in &other.endpoints {
            let ours = self.endpoints.entry(key.clone()).or_default();
            ours.pairs += theirs.pairs;
            for (path, field) in &theirs.fields {
                let mine = ours.fields.entry(path.clone()).or_default();
                mine.present += field.present;
                mine.differs += field.differs;
            }
        }
    }

    /// No A/A pair at all.
    pub fn is_empty(&self) -> bool {
        self.endpoints.values().all(|e| e.pairs == 0)
    }
}

/// diffy's filter: are `raw` A/B differences out of `total` A/B pairs real, given `noise` A/A
/// differences (already scaled to `total` pairs)? Thresholds in percent.
pub fn is_real(raw: f64, noise: f64, total: f64, relative: f64, absolute: f64) -> bool {
    if total <= 0.0 || raw <= noise {
        return false;
    }
    let gap = (raw - noise).abs();
    let relative_difference = gap / (raw + noise) * 100.0;
    let absolute_difference = gap / total * 100.0;
    relative_difference > relative && absolute_difference > absolute
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffy_thresholds_at_their_exact_edges() {
        // relative = |6 - 4| / (6 + 4) = 20 %: not above 20, so noise.
        assert!(!is_real(6.0, 4.0, 10.0, 20.0, 0.03));
        // 7 vs 4: 27 %, absolute 30 %: real.
        assert!(is_real(7.0, 4.0, 10.0, 20.0, 0.03));
        // absolute = 3 / 10000 = 0.03 %: not above 0.03, so noise, though relative is 100 %.
        assert!(!is_real(3.0, 0.0, 10_000.0, 20.0, 0.03));
        assert!(is_real(4.0, 0.0, 10_000.0, 20.0, 0.03));
        // Never real when A/A differs as often or more.
        assert!(!is_real(5.0, 5.0, 10.0, 0.0, 0.0));
        assert!(!is_real(4.0, 5.0, 10.0, 0.0, 0.0));
        assert!(!is_real(1.0, 0.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = NoiseModel::new();
        a.endpoints.insert(
            "h1 GET /".into(),
            EndpointNoise {
                pairs: 2,
                fields: [(
                    "body.t".to_owned(),
                    FieldNoise {
                        present: 2,
                        differs: 1,
                    },
                )]
                .into(),
            },
        );
        let mut b = a.clone();
        b.endpoints
            .insert("h1 GET /x".into(), EndpointNoise::default());
        a.merge(&b);
        assert_eq!(a.endpoints["h1 GET /"].pairs, 4);
        assert_eq!(
            a.endpoints["h1 GET /"].fields["body.t"],
            FieldNoise {
                present: 4,
                differs: 2
            }
        );
        assert!(a.endpoints.contains_key("h1 GET /x"));
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.starts_with("{\"noise_model\":1,"), "{json}");
        assert_eq!(serde_json::from_str::<NoiseModel>(&json).unwrap(), a);
    }
}
