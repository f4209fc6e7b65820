//! The activation rules that sit between a downloaded bundle and the policy in force:
//! unpack and signature (checked before the content is parsed), expected roots, rollback, root overlap with the other bundles, then
//! compile-and-swap of the whole set. Written against two small traits so the rules do not
//! depend on how bundles are parsed ([`BundleFormat`]) or compiled ([`PolicySink`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use regent_bundle::manifest::paths_overlap;

use opentelemetry::trace::Span as _;
use opentelemetry::KeyValue;

use super::runner::{Activator, Refusal};
use super::trace::{self, attr};

/// What the rules need from the bundle library.
pub trait BundleFormat: Send + Sync + 'static {
    /// An unpacked bundle.
    type Bundle: Send + Sync + 'static;
    /// A verified signature (compared for rollback).
    type Signature: Clone + Send + Sync + 'static;
    /// Reads a downloaded bundle: safe unpack with limits (refusal reason `unpack`), then, when
    /// `verify`, the signature against the keyring (reason `signature`), which must be checked
    /// before any of the bundle's content is parsed, and only then the content (reason `unpack`).
    /// `previous` is the active bundle of the same name, whose unchanged parts the format may take
    /// over instead of reading them again. The signature is `None` exactly when `verify` is false.
    fn read(
        &self,
        bytes: &[u8],
        previous: Option<&Self::Bundle>,
        verify: bool,
    ) -> Result<(Self::Bundle, Option<Self::Signature>), Refusal>;
    /// Manifest revision.
    fn revision(&self, bundle: &Self::Bundle) -> String;
    /// Manifest roots (`[""]` = everything).
    fn roots(&self, bundle: &Self::Bundle) -> Vec<String>;
    /// Refuse `candidate` if it is older than `active`. Refusal reason `rollback`.
    fn check_not_rollback(
        &self,
        active: &Self::Signature,
        candidate: &Self::Signature,
    ) -> Result<(), Refusal>;
    /// The id of the key that made `signature`, for the verify span.
    fn key_id(&self, _signature: &Self::Signature) -> Option<String> {
        None
    }
}

/// Compiles a complete set of bundles and swaps it in atomically; on error nothing changes.
pub trait PolicySink<B>: Send + Sync + 'static {
    /// Activate exactly these bundles. Refusal reason `compile`.
    fn activate(&self, bundles: Vec<(String, Arc<B>)>) -> Result<(), Refusal>;
    /// The evaluator of the policy now active (`vm` or `interpreter`), for the activate span.
    fn evaluator(&self) -> Option<&'static str> {
        None
    }
}

struct Active<F: BundleFormat> {
    bundle: Arc<F::Bundle>,
    roots: Vec<String>,
    signature: Option<F::Signature>,
}

/// Rule settings, from the sync configuration.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Expected roots per bundle name (None = whatever the manifest says).
    pub expected_roots: BTreeMap<String, Option<Vec<String>>>,
    /// Skip signature verification (logged at every activation).
    pub insecure_skip_verification: bool,
    /// Accept older signed bundles.
    pub allow_rollback: bool,
}

/// An [`Activator`] that applies the rules and keeps the set of active bundles.
pub struct SetActivator<F: BundleFormat, S: PolicySink<F::Bundle>> {
    format: F,
    sink: S,
    rules: Rules,
    // Held across the compile: activations of different bundles must not interleave, since
    // each compiles the whole set.
    active: Mutex<BTreeMap<String, Active<F>>>,
}

impl<F: BundleFormat, S: PolicySink<F::Bundle>> SetActivator<F, S> {
    /// A new activator with no active bundles.
    pub fn new(format: F, sink: S, rules: Rules) -> Self {
        SetActivator {
            format,
            sink,
            rules,
            active: Mutex::new(BTreeMap::new()),
        }
    }

    /// Revision of each active bundle.
    pub fn revisions(&self) -> BTreeMap<String, String> {
        super::lock(&self.active)
            .iter()
            .map(|(n, a)| (n.clone(), self.format.revision(&a.bundle)))
            .collect()
    }
}

impl<F: BundleFormat, S: PolicySink<F::Bundle>> Activator for SetActivator<F, S> {
    fn activate(&self, name: &str, bytes: &[u8]) -> Result<String, Refusal> {
        // The round's context, attached by the sync loop when tracing is on.
        let cx = opentelemetry::Context::current();
        let verify = !self.rules.insecure_skip_verification;
        let span = trace::child(&cx, trace::VERIFY_SPAN, name);
        let read = self.read(name, bytes, verify);
        if let Some(mut span) = span {
            let result = match &read {
                Ok(_) if !verify => "skipped",
                Ok(_) => "ok",
                Err(_) => "refused",
            };
            span.set_attribute(KeyValue::new(attr::RESULT, result));
            match &read {
                Ok((_, Some(sig))) => {
                    if let Some(kid) = self.format.key_id(sig) {
                        span.set_attribute(KeyValue::new(attr::SIGNING_KID, kid));
                    }
                    span.end();
                }
                Ok((_, None)) => span.end(),
                Err(r) => {
                    span.set_attribute(KeyValue::new(attr::REASON, r.reason));
                    trace::fail(span, r.to_string());
                }
            }
        }
        let (bundle, signature) = read?;
        let span = trace::child(&cx, trace::ACTIVATE_SPAN, name);
        let activated = self.apply(name, bundle, signature);
        if let Some(mut span) = span {
            match &activated {
                Ok((revision, evaluator)) => {
                    span.set_attribute(KeyValue::new(attr::RESULT, "ok"));
                    span.set_attribute(KeyValue::new(attr::REVISION, revision.clone()));
                    if let Some(e) = evaluator {
                        span.set_attribute(KeyValue::new(attr::EVALUATOR, *e));
                    }
                    span.end();
                }
                Err(r) => {
                    span.set_attribute(KeyValue::new(attr::RESULT, "refused"));
                    span.set_attribute(KeyValue::new(attr::REASON, r.reason));
                    trace::fail(span, r.to_string());
                }
            }
        }
        activated.map(|(revision, _)| revision)
    }
}

impl<F: BundleFormat, S: PolicySink<F::Bundle>> SetActivator<F, S> {
    /// Unpacks `bytes` and, when `verify`, checks the signature.
    fn read(
        &self,
        name: &str,
        bytes: &[u8],
        verify: bool,
    ) -> Result<(F::Bundle, Option<F::Signature>), Refusal> {
        // Not held while unpacking (the slow part): status reads the active set meanwhile.
        let previous = super::lock(&self.active)
            .get(name)
            .map(|a| Arc::clone(&a.bundle));
        self.format.read(bytes, previous.as_deref(), verify)
    }

    /// The rules after the signature, then compile-and-swap: the revision and the evaluator.
    fn apply(
        &self,
        name: &str,
        bundle: F::Bundle,
        signature: Option<F::Signature>,
    ) -> Result<(String, Option<&'static str>), Refusal> {
        let verify = !self.rules.insecure_skip_verification;
        let revision = self.format.revision(&bundle);
        if !verify {
            tracing::warn!(bundle = name, revision = %revision,
                "INSECURE: activating bundle WITHOUT signature verification (sync.insecure_skip_verification)");
        }
        let roots = self.format.roots(&bundle);
        if let Some(Some(expected)) = self.rules.expected_roots.get(name) {
            let want: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
            let got: BTreeSet<&str> = roots.iter().map(String::as_str).collect();
            if want != got {
                return Err(Refusal::new(
                    "roots",
                    format!("bundle roots {got:?} differ from the configured roots {want:?}"),
                ));
            }
        }
        let mut active = super::lock(&self.active);
        if !self.rules.allow_rollback {
            if let (Some(current), Some(candidate)) = (
                active.get(name).and_then(|a| a.signature.as_ref()),
                signature.as_ref(),
            ) {
                self.format.check_not_rollback(current, candidate)?;
            }
        }
        for (other, a) in active.iter().filter(|(n, _)| n.as_str() != name) {
            for r in &roots {
                if let Some(o) = a.roots.iter().find(|o| paths_overlap(r, o)) {
                    return Err(Refusal::new(
                        "roots_overlap",
                        format!("root {r:?} of bundle {name:?} overlaps root {o:?} of active bundle {other:?}"),
                    ));
                }
            }
        }
        let bundle = Arc::new(bundle);
        let mut set: Vec<(String, Arc<F::Bundle>)> = active
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(n, a)| (n.clone(), Arc::clone(&a.bundle)))
            .collect();
        set.push((name.to_string(), Arc::clone(&bundle)));
        self.sink.activate(set)?;
        // Read under the lock: no other activation has replaced the policy yet.
        let evaluator = self.sink.evaluator();
        active.insert(
            name.to_string(),
            Active {
                bundle,
                roots,
                signature,
            },
        );
        Ok((revision, evaluator))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A textual stand-in for the bundle library: "rev;iat;root1,root2;signed|unsigned".
    // Records the revision of the `previous` bundle each unpack is given.
    #[derive(Default)]
    struct Text(Mutex<Vec<Option<String>>>);
    struct TextBundle {
        rev: String,
        iat: i64,
        roots: Vec<String>,
        signed: bool,
    }
    impl BundleFormat for Text {
        type Bundle = TextBundle;
        type Signature = i64;
        fn read(
            &self,
            bytes: &[u8],
            prev: Option<&TextBundle>,
            verify: bool,
        ) -> Result<(TextBundle, Option<i64>), Refusal> {
            (self.0.lock().unwrap()).push(prev.map(|b| b.rev.clone()));
            let b = self.unpack(bytes)?;
            if !verify {
                return Ok((b, None));
            }
            if !b.signed {
                return Err(Refusal::new("signature", "unsigned"));
            }
            let iat = b.iat;
            Ok((b, Some(iat)))
        }
        fn revision(&self, b: &TextBundle) -> String {
            b.rev.clone()
        }
        fn roots(&self, b: &TextBundle) -> Vec<String> {
            b.roots.clone()
        }
        fn check_not_rollback(&self, a: &i64, c: &i64) -> Result<(), Refusal> {
            if c < a {
                Err(Refusal::new("rollback", "older"))
            } else {
                Ok(())
            }
        }
    }
    impl Text {
        fn unpack(&self, bytes: &[u8]) -> Result<TextBundle, Refusal> {
            let s =
                std::str::from_utf8(bytes).map_err(|e| Refusal::new("unpack", e.to_string()))?;
            let p: Vec<&str> = s.split(';').collect();
            if p.len() != 4 {
                return Err(Refusal::new("unpack", "malformed"));
            }
            Ok(TextBundle {
                rev: p[0].into(),
                iat: p[1].parse().map_err(|_| Refusal::new("unpack", "iat"))?,
                roots: p[2].split(',').map(String::from).collect(),
                signed: p[3] == "signed",
            })
        }
    }
    #[derive(Default, Clone)]
    struct Sink(Arc<Mutex<Vec<Vec<String>>>>);
    impl PolicySink<TextBundle> for Sink {
        fn activate(&self, set: Vec<(String, Arc<TextBundle>)>) -> Result<(), Refusal> {
            if set.iter().any(|(_, b)| b.rev == "broken") {
                return Err(Refusal::new("compile", "does not compile"));
            }
            self.0
                .lock()
                .unwrap()
                .push(set.iter().map(|(n, b)| format!("{n}={}", b.rev)).collect());
            Ok(())
        }
    }

    fn act(rules: Rules) -> (SetActivator<Text, Sink>, Sink) {
        let sink = Sink::default();
        (
            SetActivator::new(Text::default(), sink.clone(), rules),
            sink,
        )
    }

    #[test]
    fn set_is_replaced_one_bundle_at_a_time() {
        let (a, sink) = act(Rules::default());
        assert_eq!(a.activate("authz", b"r1;10;authz;signed").unwrap(), "r1");
        a.activate("limits", b"l1;10;limits;signed").unwrap();
        a.activate("authz", b"r2;11;authz;signed").unwrap();
        let last = sink.0.lock().unwrap().last().unwrap().clone();
        assert_eq!(last, vec!["limits=l1".to_string(), "authz=r2".to_string()]);
    }

    #[test]
    fn refusals_leave_the_set_unchanged() {
        let (a, sink) = act(Rules {
            expected_roots: BTreeMap::from([("authz".into(), Some(vec!["authz".into()]))]),
            ..Rules::default()
        });
        a.activate("authz", b"r1;10;authz;signed").unwrap();
        let cases: [(&str, &[u8], &str); 5] = [
            ("authz", b"garbage", "unpack"),
            ("authz", b"r2;11;authz;unsigned", "signature"),
            ("authz", b"r0;9;authz;signed", "rollback"),
            ("authz", b"r2;11;other;signed", "roots"),
            ("authz", b"broken;12;authz;signed", "compile"),
        ];
        for (name, bytes, reason) in cases {
            let e = a.activate(name, bytes).unwrap_err();
            assert_eq!(e.reason, reason, "{e}");
        }
        let e = a.activate("other", b"o1;1;authz/sub;signed").unwrap_err();
        assert_eq!(e.reason, "roots_overlap");
        assert!(
            e.message.contains("\"other\"") && e.message.contains("\"authz\""),
            "{e}"
        );
        assert_eq!(
            a.revisions(),
            BTreeMap::from([("authz".into(), "r1".into())])
        );
        assert_eq!(sink.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn unpack_is_given_the_active_bundle_of_the_same_name() {
        let (a, _) = act(Rules::default());
        a.activate("authz", b"r1;10;authz;signed").unwrap();
        a.activate("limits", b"l1;10;limits;signed").unwrap();
        a.activate("authz", b"garbage").unwrap_err();
        a.activate("authz", b"r2;11;authz;signed").unwrap();
        a.activate("authz", b"r3;12;authz;signed").unwrap();
        let seen = a.format.0.lock().unwrap().clone();
        let r = |s: &str| Some(s.to_string());
        assert_eq!(seen, [None, None, r("r1"), r("r1"), r("r2")]);
    }

    #[test]
    fn rollback_and_insecure_switches() {
        let (a, _) = act(Rules {
            allow_rollback: true,
            ..Rules::default()
        });
        a.activate("authz", b"r2;11;authz;signed").unwrap();
        assert_eq!(a.activate("authz", b"r1;10;authz;signed").unwrap(), "r1");
        let (a, _) = act(Rules {
            insecure_skip_verification: true,
            ..Rules::default()
        });
        assert_eq!(a.activate("authz", b"r1;10;authz;unsigned").unwrap(), "r1");
    }
}
