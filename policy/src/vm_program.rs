//! Trimming a compiled RVM program for the hot path.
//!
//! regorus 0.14.1 (pinned exactly in the workspace) clones the whole `RuleInfo` of a rule on every
//! rule call, cache hits included: its name, its per-definition `destructuring_blocks` and
//! `else_bodies` vectors and a function's parameter names. On the RBAC reference policy those
//! clones and their drops were about a fifth of the VM's instructions. At run time the VM reads
//! those fields only as `destructuring_blocks.get(i).and_then(|b| *b)`,
//! `else_bodies.get(i).and_then(|b| b.get(j)).unwrap_or(false)` and `function_info.is_some()`, and
//! never reads `name` or `param_names` (program listings do). So a vector that holds only `None`
//! or only `false` is emptied (a missing entry reads the same), and the names are dropped: the
//! program decides exactly as before, with fewer allocations per rule call. The upstream fix is to
//! look the rule up by reference instead of cloning it; when the pin moves, this module is checked
//! against the new VM (the VM-versus-interpreter tests run every policy vector on both).

use std::sync::Arc;

use regorus::rvm::Program;

/// What trimming removed, for the activation log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Rules whose metadata was trimmed.
    pub rules: usize,
    /// Heap vectors and strings no longer cloned per call.
    pub buffers: usize,
}

/// Empties the `RuleInfo` fields the VM does not read at run time (see the module docs). The
/// program must not be shared yet (it is fresh from the compiler); if it is, it is left as is.
pub fn trim_for_execution(program: &mut Arc<Program>) -> Trimmed {
    let Some(program) = Arc::get_mut(program) else {
        return Trimmed::default();
    };
    let mut trimmed = Trimmed::default();
    for info in &mut program.rule_infos {
        let before = trimmed.buffers;
        if !info.name.is_empty() {
            info.name = String::new();
            trimmed.buffers += 1;
        }
        if !info.destructuring_blocks.is_empty()
            && info.destructuring_blocks.iter().all(Option::is_none)
        {
            info.destructuring_blocks = Vec::new();
            trimmed.buffers += 1;
        }
        if !info.else_bodies.is_empty() && info.else_bodies.iter().flatten().all(|e| !e) {
            trimmed.buffers += 1 + info.else_bodies.iter().filter(|b| b.capacity() > 0).count();
            info.else_bodies = Vec::new();
        }
        if let Some(f) = &mut info.function_info {
            if !f.param_names.is_empty() {
                trimmed.buffers += 1 + f.param_names.len();
                f.param_names = Vec::new();
            }
        }
        if trimmed.buffers > before {
            trimmed.rules += 1;
        }
    }
    trimmed
}

#[cfg(test)]
mod tests {
    use super::*;
    use regorus::languages::rego::compiler::Compiler;
    use regorus::rvm::RegoVM;
    use regorus::Value;

    const POLICY: &str = r#"package t
import rego.v1

default allow := false

allow if input.user == "admin"

allow if {
    some role in data.roles[input.user]
    grants(role, input.action)
}

grants(role, action) if action in data.perms[role]

grants(role, _) if role == "root"

level := "high" if input.n > 10
else := "mid" if input.n > 5
else := "low"

names contains n if some n, _ in data.roles

pairs[k] := v if some k, v in data.perms

swap([a, b]) := [b, a]

result := {"allow": allow, "level": level, "names": names, "pairs": pairs, "swapped": swap([input.n, input.user])}
"#;

    fn program() -> Arc<Program> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("t.rego".into(), POLICY.into())
            .expect("policy parses");
        let data =
            r#"{"roles": {"alice": ["reader"], "bob": ["root"]}, "perms": {"reader": ["read"]}}"#;
        engine
            .add_data(Value::from_json_str(data).expect("data"))
            .expect("data loads");
        let compiled = engine
            .compile_with_entrypoint(&"data.t.result".into())
            .expect("compiles");
        Compiler::compile_from_policy(&compiled, &["data.t.result"]).expect("compiles to the VM")
    }

    fn run(program: &Arc<Program>, input: &str) -> Value {
        let mut vm = RegoVM::new();
        vm.load_program(program.clone());
        let data =
            r#"{"roles": {"alice": ["reader"], "bob": ["root"]}, "perms": {"reader": ["read"]}}"#;
        vm.set_data(Value::from_json_str(data).expect("data"))
            .expect("data set");
        vm.set_input(Value::from_json_str(input).expect("input"));
        vm.execute().expect("executes")
    }

    #[test]
    fn trimmed_programs_decide_exactly_as_untrimmed_ones() {
        let original = program();
        let mut trimmed = program();
        let t = trim_for_execution(&mut trimmed);
        assert!(t.rules > 0 && t.buffers > t.rules, "{t:?}");
        // The `else` chain keeps its markers: they are not all false.
        assert!(trimmed.rule_infos.iter().any(|r| !r.else_bodies.is_empty()));
        assert!(trimmed.rule_infos.iter().all(|r| r.name.is_empty()));
        for input in [
            r#"{"user": "admin", "action": "write", "n": 11}"#,
            r#"{"user": "alice", "action": "read", "n": 6}"#,
            r#"{"user": "alice", "action": "write", "n": 1}"#,
            r#"{"user": "bob", "action": "anything", "n": 5}"#,
            r#"{"user": "carol", "n": "x"}"#,
        ] {
            let want = run(&original, input);
            assert_ne!(want, Value::Undefined, "{input}");
            assert_eq!(run(&trimmed, input), want, "{input}");
        }
    }

    #[test]
    fn a_shared_program_is_left_alone() {
        let mut p = program();
        let _other = p.clone();
        assert_eq!(trim_for_execution(&mut p), Trimmed::default());
        assert!(p.rule_infos.iter().any(|r| !r.name.is_empty()));
    }
}
