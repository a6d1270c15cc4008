//! The container image: the `docker build` that `cargo xtask kind` runs, and (in the tests) the
//! repository's `Dockerfile` read well enough to hold it to what the rest of the project
//! assumes: the toolchain pins of `setup.rs`, the binary paths of the chart and the kind
//! manifests, a small runtime base.

/// Where the image puts the collector (the kind manifests and `kind up` run it there; the
/// tests below hold the Dockerfile, the chart and the manifests to these paths).
pub const COLLECTOR_PATH: &str = "/usr/local/bin/capture-collector";

/// `docker build` of the repository's image, run from the workspace root.
pub fn build_command(tag: &str) -> Vec<String> {
    ["docker", "build", "--tag", tag, "--file", "Dockerfile", "."]
        .map(str::to_owned)
        .to_vec()
}

/// A Dockerfile reader for the tests: instructions, stages, `ARG` substitution.
#[cfg(test)]
pub(crate) mod dockerfile {
    use std::collections::BTreeMap;
    use std::path::Path;

    use anyhow::{Context as _, bail};

    /// Where the image puts the daemon; the chart's `command` runs it there.
    pub const DAEMON_PATH: &str = "/usr/local/bin/capture-daemon";

    /// A parsed Dockerfile: its global `ARG` defaults and its stages.
    #[derive(Debug)]
    pub struct Dockerfile {
        pub args: BTreeMap<String, String>,
        pub stages: Vec<Stage>,
    }

    #[derive(Debug)]
    pub struct Stage {
        /// The `FROM` image with the global `ARG`s substituted.
        pub base: String,
        pub name: Option<String>,
        /// (instruction in upper case, rest of the line), continuation lines joined.
        pub instructions: Vec<(String, String)>,
    }

    impl Dockerfile {
        pub fn read(root: &Path) -> anyhow::Result<Self> {
            let path = root.join("Dockerfile");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Self::parse(&text)
        }

        /// Parses the instructions (comments, blank lines and `\` continuations as Docker does;
        /// heredocs are not supported).
        pub fn parse(text: &str) -> anyhow::Result<Self> {
            let mut args = BTreeMap::new();
            let mut stages: Vec<Stage> = Vec::new();
            let mut logical = String::new();
            for line in text.lines() {
                let trimmed = line.trim();
                if trimmed.starts_with('#') || (trimmed.is_empty() && logical.is_empty()) {
                    continue;
                }
                if let Some(head) = trimmed.strip_suffix('\\') {
                    logical.push_str(head.trim_end());
                    logical.push(' ');
                    continue;
                }
                logical.push_str(trimmed);
                let instruction = std::mem::take(&mut logical);
                let (keyword, rest) = instruction
                    .split_once(char::is_whitespace)
                    .with_context(|| format!("instruction without arguments: {instruction}"))?;
                let keyword = keyword.to_ascii_uppercase();
                let rest = rest.trim().to_owned();
                match (keyword.as_str(), stages.last_mut()) {
                    ("ARG", None) => {
                        let (name, default) = rest.split_once('=').unwrap_or((rest.as_str(), ""));
                        args.insert(name.to_owned(), default.to_owned());
                    }
                    ("FROM", _) => {
                        let words: Vec<&str> = rest.split_whitespace().collect();
                        let (image, name) = match words.as_slice() {
                            [image] => (*image, None),
                            [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                                (*image, Some((*name).to_owned()))
                            }
                            _ => bail!("cannot read FROM {rest}"),
                        };
                        stages.push(Stage {
                            base: substitute(image, &args),
                            name,
                            instructions: Vec::new(),
                        });
                    }
                    (_, Some(stage)) => stage.instructions.push((keyword, rest)),
                    (_, None) => bail!("{keyword} before the first FROM"),
                }
            }
            if !logical.is_empty() {
                bail!("the Dockerfile ends inside a continued line");
            }
            Ok(Self { args, stages })
        }

        pub fn stage(&self, name: &str) -> anyhow::Result<&Stage> {
            self.stages
                .iter()
                .find(|s| s.name.as_deref() == Some(name))
                .with_context(|| format!("no stage {name}"))
        }

        /// `text` with `${NAME}` and `$NAME` of the global `ARG`s replaced by their defaults.
        pub fn substitute(&self, text: &str) -> String {
            substitute(text, &self.args)
        }
    }

    impl Stage {
        /// The arguments of every instruction `keyword` of this stage.
        pub fn all(&self, keyword: &str) -> Vec<&str> {
            self.instructions
                .iter()
                .filter(|(k, _)| k == keyword)
                .map(|(_, rest)| rest.as_str())
                .collect()
        }
    }

    fn substitute(text: &str, args: &BTreeMap<String, String>) -> String {
        let mut out = text.to_owned();
        // Longest names first, so $LLVM_VERSION is not read as $LLVM followed by _VERSION.
        let mut names: Vec<&String> = args.keys().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for name in names {
            out = out
                .replace(&format!("${{{name}}}"), &args[name])
                .replace(&format!("${name}"), &args[name]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::dockerfile::{DAEMON_PATH, Dockerfile};
    use crate::setup;
    use capture_e2e::chart::{RenderedChart, chart_dir};
    use capture_e2e::helm::helm_sdk_ready;

    fn root() -> std::path::PathBuf {
        capture_e2e::workspace_root()
    }

    fn dockerfile() -> Dockerfile {
        Dockerfile::read(&root()).expect("the Dockerfile parses")
    }

    /// Shell words of a RUN line, quotes removed (the Dockerfile uses no nested quoting).
    fn words(run: &str) -> Vec<String> {
        run.split_whitespace()
            .map(|w| w.trim_matches('"').to_owned())
            .collect()
    }

    #[test]
    fn three_stages_build_then_a_small_runtime() {
        let file = dockerfile();
        let names: Vec<_> = file.stages.iter().map(|s| s.name.as_deref()).collect();
        assert_eq!(names, [Some("toolchain"), Some("builder"), Some("runtime")]);
        // The runtime is distroless: glibc and libgcc, no shell, no package manager.
        let runtime = file.stage("runtime").unwrap();
        assert!(
            runtime.base.starts_with("gcr.io/distroless/cc-debian12"),
            "{}",
            runtime.base
        );
        assert_eq!(runtime.all("USER"), ["65532:65532"]);
        // Only the two binaries are copied in, from the builder.
        let copies = runtime.all("COPY");
        assert_eq!(
            copies,
            ["--from=builder /out/capture-daemon /out/capture-collector /usr/local/bin/"]
        );
        assert_eq!(runtime.all("ENTRYPOINT"), [format!("[\"{DAEMON_PATH}\"]")]);
        assert!(runtime.all("RUN").is_empty());
    }

    #[test]
    fn the_toolchain_is_installed_as_setup_rs_installs_it() {
        let file = dockerfile();
        // The stable toolchain of the workspace (rust-version) builds the host crates.
        let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
        let rust_version = manifest
            .lines()
            .find_map(|l| l.strip_prefix("rust-version = "))
            .map(|v| v.trim_matches('"'))
            .unwrap();
        assert_eq!(file.args["RUST_VERSION"], rust_version);
        let toolchain = file.stage("toolchain").unwrap();
        assert_eq!(toolchain.base, format!("rust:{rust_version}-bookworm"));

        assert_eq!(file.args["LLVM_VERSION"], setup::LLVM);
        assert_eq!(file.args["BPF_LINKER_VERSION"], setup::BPF_LINKER_VERSION);
        let runs: Vec<String> = toolchain
            .all("RUN")
            .into_iter()
            .map(|r| file.substitute(r))
            .collect();

        let apt = runs
            .iter()
            .find(|r| r.contains("apt-get install"))
            .expect("an apt-get install");
        let apt_words = words(apt);
        for package in setup::BUILD_PACKAGES {
            assert!(
                apt_words.iter().any(|w| w == package),
                "{package} missing from {apt}"
            );
        }

        let nightly = runs
            .iter()
            .find(|r| r.contains("rustup toolchain install"))
            .expect("a nightly install");
        let nightly = words(nightly);
        assert!(nightly.iter().any(|w| w == "nightly"));
        assert!(
            nightly
                .windows(2)
                .any(|w| w[0] == "--component" && w[1] == "rust-src")
        );

        // bpf-linker: exactly setup.rs's `cargo` arguments and environment.
        let linker = runs
            .iter()
            .find(|r| r.contains("cargo install"))
            .expect("a cargo install");
        let linker = words(linker);
        let (args, envs) = setup::bpf_linker_install();
        let cargo_at = linker.iter().position(|w| w == "cargo").unwrap();
        assert_eq!(linker[cargo_at + 1..], args[..], "cargo install arguments");
        for (name, value) in envs {
            assert!(
                linker[..cargo_at].contains(&format!("{name}={value}")),
                "{name}={value} missing from {linker:?}"
            );
        }
    }

    #[test]
    fn the_builder_builds_both_binaries_from_the_lockfile() {
        let file = dockerfile();
        let builder = file.stage("builder").unwrap();
        assert_eq!(builder.base, "toolchain");
        let run = builder.all("RUN").join(" ");
        let run = words(&run);
        let build = run
            .windows(4)
            .position(|w| w == ["cargo", "build", "--release", "--locked"])
            .expect("cargo build --release --locked");
        assert!(
            run[build..]
                .windows(2)
                .any(|w| w == ["-p", "capture-daemon"])
        );
        assert!(
            run[build..]
                .windows(2)
                .any(|w| w == ["-p", "capture-collector"])
        );
        for bin in ["capture-daemon", "capture-collector"] {
            assert!(run.contains(&format!("target/release/{bin}")), "{bin}");
        }
    }

    #[test]
    fn the_build_context_leaves_out_build_output_and_history() {
        let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
        let entries: Vec<&str> = ignore
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        for must in ["target", ".git"] {
            assert!(entries.contains(&must), "{must} not in .dockerignore");
        }
        // The workspace members must stay in the context (cargo needs every manifest).
        for member in [
            "capture-common",
            "capture-ebpf",
            "capture-daemon",
            "tests",
            "xtask",
        ] {
            assert!(!entries.contains(&member), "{member} is ignored");
        }
    }

    #[test]
    fn the_chart_runs_the_daemon_where_the_image_puts_it() -> anyhow::Result<()> {
        let Some(sdk) = helm_sdk_ready(&root())? else {
            return Ok(());
        };
        let chart = RenderedChart::render(&sdk, &chart_dir(&root()), None)?;
        assert_eq!(chart.command()?, [DAEMON_PATH]);
        Ok(())
    }

    #[test]
    fn parser_joins_continuations_and_substitutes_args() {
        let file = Dockerfile::parse(
            "# comment\nARG A=1\nARG AB=2\nFROM img:${A} AS one\nRUN echo $AB \\\n    ${A}\n",
        )
        .unwrap();
        assert_eq!(file.stages[0].base, "img:1");
        assert_eq!(file.substitute(file.stages[0].all("RUN")[0]), "echo 2 1");
        assert!(Dockerfile::parse("RUN x\n").is_err());
        assert!(Dockerfile::parse("FROM a\nRUN x \\\n").is_err());
    }
}
