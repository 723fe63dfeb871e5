//! The rule that keeps the tutorials from rotting, checked without Docker: every shell
//! block of the Markdown the repository ships (README.md, docs/*.md, every
//! deploy/**/README.md) is either run by `scripts/readme-run` (its file names a stack with
//! `<!-- readme-run: stack NAME -->`, and scripts/lib/readme-stack-NAME.sh exists), or run
//! by another script that scripts/test runs (the file says
//! `<!-- readme-run: runner SCRIPT TAG -->` and the block follows `<!-- TAG: ... -->`), or
//! carries `<!-- readme-run: skip REASON -->` right before it. The parser follows the
//! runner's own (an awk program in scripts/readme-run): the two must agree, so the rules
//! are the same here and there, and a file that breaks them fails both; the runner itself
//! is run here too on files that need no stack (and so no Docker), good and bad.

use std::fs;
use std::path::{Path, PathBuf};

const SHELLS: &[&str] = &["sh", "bash", "shell", "console", "zsh"];
const MARKER: &str = "<!-- readme-run:";

#[derive(Debug, Default)]
struct Parsed {
    stack: Option<String>,
    /// (script, tag) of `<!-- readme-run: runner SCRIPT TAG -->`.
    runner: Option<(String, String)>,
    /// (line of the opening fence, skip reason if marked)
    shell_blocks: Vec<(usize, Option<String>)>,
    /// The tag of another runner's comment right before each shell block, if any.
    tags: Vec<Option<String>>,
    /// Names of the checks the file asks for.
    checks: Vec<String>,
    problems: Vec<String>,
}

fn marker_body<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(MARKER)?.strip_prefix(' ')?;
    let rest = rest.strip_prefix(kind)?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    Some(rest.split("-->").next().unwrap_or("").trim())
}

/// The opening fence of a line (its backticks or tildes) and the language word, if any.
fn fence(line: &str) -> Option<(String, String)> {
    let trimmed = line.trim_start();
    let ch = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let run: String = trimmed.chars().take_while(|c| *c == ch).collect();
    if run.len() < 3 {
        return None;
    }
    let info = trimmed[run.len()..].trim_start();
    let lang = info
        .split(|c: char| c.is_whitespace() || c == '{' || c == ',')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    Some((run, lang))
}

/// The word of a comment `<!-- WORD: ... -->` that is not readme-run's own: another
/// runner's tag on the block that follows.
fn other_tag(line: &str) -> Option<String> {
    let body = line.strip_prefix("<!-- ")?;
    if !line.trim_end().ends_with("-->") || line.starts_with(MARKER) {
        return None;
    }
    let (word, _) = body.split_once(": ")?;
    word.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .then(|| word.to_string())
        .filter(|w| !w.is_empty())
}

fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut skip: Option<(usize, String)> = None;
    let mut tag: Option<String> = None;
    let mut open: Option<(String, usize, bool)> = None; // (fence, line, is shell)
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some((run, _, _)) = &open {
            if line.trim() == run.as_str() {
                open = None;
            }
            continue;
        }
        if let Some((run, lang)) = fence(line) {
            let shell = SHELLS.contains(&lang.as_str());
            if shell {
                parsed
                    .shell_blocks
                    .push((number, skip.take().map(|(_, reason)| reason)));
                parsed.tags.push(tag.take());
            } else if let Some((at, _)) = skip.take() {
                parsed.problems.push(format!(
                    "{at}: a skip marker is followed by a ```{lang} block, not a shell block"
                ));
            }
            open = Some((run, number, shell));
            continue;
        }
        if let Some(stack) = marker_body(line, "stack") {
            match &parsed.stack {
                Some(first) if first != stack => parsed.problems.push(format!(
                    "{number}: a second stack marker ({stack}, after {first})"
                )),
                _ => parsed.stack = Some(stack.to_string()),
            }
            continue;
        }
        if let Some(runner) = marker_body(line, "runner") {
            let mut words = runner.split_whitespace();
            match (words.next(), words.next()) {
                (Some(script), Some(runner_tag)) => {
                    parsed.runner = Some((script.to_string(), runner_tag.to_string()))
                }
                _ => parsed.problems.push(format!(
                    "{number}: a runner marker needs a script and a tag: `<!-- readme-run: runner SCRIPT TAG -->`"
                )),
            }
            continue;
        }
        if let Some(check) = marker_body(line, "check") {
            if skip.is_some() {
                parsed.problems.push(format!(
                    "{number}: a check comes between a skip marker and its block"
                ));
            }
            if parsed.shell_blocks.is_empty() {
                parsed
                    .problems
                    .push(format!("{number}: a check before any shell block"));
            }
            parsed.checks.push(
                check
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
            continue;
        }
        if let Some(reason) = marker_body(line, "skip") {
            if skip.is_some() {
                parsed
                    .problems
                    .push(format!("{number}: two skip markers in a row"));
            }
            if reason.is_empty() {
                parsed
                    .problems
                    .push(format!("{number}: a skip marker without a reason"));
            }
            skip = Some((number, reason.to_string()));
            continue;
        }
        if line.starts_with(MARKER) {
            parsed
                .problems
                .push(format!("{number}: unknown readme-run marker: {line}"));
            continue;
        }
        if let Some(word) = other_tag(line) {
            tag = Some(word);
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        tag = None;
        if let Some((at, _)) = skip.take() {
            parsed.problems.push(format!(
                "{at}: a skip marker not directly followed by a shell block"
            ));
        }
    }
    if let Some((_, at, _)) = open {
        parsed
            .problems
            .push(format!("{at}: a block that never closes"));
    }
    if let Some((at, _)) = skip {
        parsed
            .problems
            .push(format!("{at}: a skip marker at the end of the file"));
    }
    if let (Some(stack), Some((runner, _))) = (&parsed.stack, &parsed.runner) {
        parsed.problems.push(format!(
            "both a stack ({stack}) and a runner ({runner}): one runs the file"
        ));
    }
    if parsed.stack.is_none() {
        for ((line, reason), block_tag) in parsed.shell_blocks.iter().zip(&parsed.tags) {
            if reason.is_some() {
                continue;
            }
            match &parsed.runner {
                Some((_, runner_tag)) if block_tag.as_ref() == Some(runner_tag) => {}
                Some((runner, runner_tag)) => parsed.problems.push(format!(
                    "{line}: a shell block neither run by {runner} (no `<!-- {runner_tag}: STEP -->` before it) nor marked `<!-- readme-run: skip REASON -->`"
                )),
                None => parsed.problems.push(format!(
                    "{line}: a shell block neither run (the file names no `<!-- readme-run: stack NAME -->`) nor marked `<!-- readme-run: skip REASON -->`"
                )),
            }
        }
    }
    parsed
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy/ sits in the repository root")
        .to_path_buf()
}

fn readmes_under(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                readmes_under(&path, found);
            }
        } else if path.file_name().is_some_and(|n| n == "README.md") {
            found.push(path);
        }
    }
}

/// README.md, docs/*.md and every deploy/**/README.md.
fn shipped_markdown() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut deploy = Vec::new();
    readmes_under(&root.join("deploy"), &mut deploy);
    deploy.sort();
    files.extend(deploy);
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_shell_block_of_the_shipped_markdown_is_run_or_marked() {
    let root = repo_root();
    let runner = read(&root.join("scripts/readme-run"));
    let mut problems = Vec::new();
    for file in shipped_markdown() {
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let parsed = parse(&read(&file));
        problems.extend(parsed.problems.iter().map(|p| format!("{shown}:{p}")));
        if let Some((runner, _)) = &parsed.runner {
            if !root.join(runner).is_file() {
                problems.push(format!(
                    "{shown}: its blocks are run by {runner}, which does not exist"
                ));
            }
            if !read(&root.join("scripts/test")).contains(runner.as_str()) {
                problems.push(format!(
                    "{shown}: its blocks are run by {runner}, which scripts/test does not run"
                ));
            }
        }
        let Some(stack) = &parsed.stack else {
            continue;
        };
        let stack_file = root.join(format!("scripts/lib/readme-stack-{stack}.sh"));
        let Ok(stack_text) = fs::read_to_string(&stack_file) else {
            problems.push(format!(
                "{shown}: names the stack {stack:?}, but scripts/lib/readme-stack-{stack}.sh (which prepares and removes it for scripts/readme-run) does not exist"
            ));
            continue;
        };
        for check in &parsed.checks {
            let function = format!("check_{}()", check.replace('-', "_"));
            if !runner.contains(&function) && !stack_text.contains(&function) {
                problems.push(format!(
                    "{shown}: asks for the check {check:?}, which neither scripts/readme-run nor {} defines ({function})",
                    stack_file.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "shell blocks that the README run would neither run nor list as skipped:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_readme_is_run_against_the_compose_stack_by_the_test_command() {
    let root = repo_root();
    let parsed = parse(&read(&root.join("README.md")));
    assert_eq!(parsed.stack.as_deref(), Some("compose"));
    let run = parsed
        .shell_blocks
        .iter()
        .filter(|(_, skip)| skip.is_none())
        .count();
    assert!(
        run >= 30,
        "README.md runs only {run} shell blocks: the tutorial is its commands"
    );
    let test = read(&root.join("scripts/test"));
    assert!(
        test.contains("scripts/readme-run"),
        "scripts/test runs scripts/readme-run"
    );
    assert!(
        test.contains("deploy") && test.contains("README.md"),
        "scripts/test runs scripts/readme-run over the deploy READMEs too"
    );
}

#[test]
fn an_unmarked_block_in_a_file_without_a_stack_is_a_problem() {
    let parsed = parse("# t\n\n```sh\necho hi\n```\n");
    assert_eq!(parsed.problems.len(), 1, "{:?}", parsed.problems);
    assert!(
        parsed.problems[0].starts_with("3: a shell block neither run"),
        "{:?}",
        parsed.problems
    );
    for lang in ["bash", "shell", "console", "zsh", "SH", "sh title=x"] {
        let parsed = parse(&format!("```{lang}\n$ ls\n```\n"));
        assert_eq!(parsed.problems.len(), 1, "{lang}: {:?}", parsed.problems);
    }
}

#[test]
fn a_marked_block_or_a_block_in_a_file_with_a_stack_is_fine() {
    let parsed =
        parse("<!-- readme-run: skip cloud: needs an account -->\n\n```sh\ndoctl x\n```\n");
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    assert_eq!(
        parsed.shell_blocks,
        vec![(3, Some("cloud: needs an account".to_string()))]
    );
    let parsed = parse(
        "<!-- readme-run: stack swarm -->\n```sh\nls\n```\n<!-- readme-run: check spread-over 3 -->\n",
    );
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    assert_eq!(parsed.stack.as_deref(), Some("swarm"));
    assert_eq!(parsed.checks, vec!["spread-over".to_string()]);
}

#[test]
fn blocks_another_runner_runs_are_those_after_its_tag() {
    let text = "<!-- readme-run: runner scripts/swarm-e2e swarm-e2e -->\n\
                <!-- swarm-e2e: init -->\n```sh\ndocker swarm init\n```\n\
                <!-- readme-run: skip cloud: an account -->\n```sh\ndoctl x\n```\n\
                <!-- other: x -->\n```sh\nls\n```\n\
                <!-- swarm-e2e: late -->\nSome text.\n```sh\nls\n```\n";
    let parsed = parse(text);
    assert_eq!(
        parsed.runner,
        Some(("scripts/swarm-e2e".to_string(), "swarm-e2e".to_string()))
    );
    let lines: Vec<&str> = parsed
        .problems
        .iter()
        .map(|p| p.split(':').next().unwrap())
        .collect();
    // The block after another tag, and the one that text separates from its tag.
    assert_eq!(lines, vec!["11", "16"], "{:?}", parsed.problems);
    assert!(parsed.problems[0].contains("neither run by scripts/swarm-e2e"));
    let both = parse("<!-- readme-run: stack compose -->\n<!-- readme-run: runner a b -->\n");
    assert!(
        both.problems.iter().any(|p| p.contains("both a stack")),
        "{:?}",
        both.problems
    );
}

#[test]
fn other_languages_and_shell_text_inside_them_are_not_blocks() {
    let parsed =
        parse("```toml\nx = 1\n```\n````markdown\n```sh\nrm -rf /\n```\n````\n```\nplain\n```\n");
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    assert!(parsed.shell_blocks.is_empty(), "{:?}", parsed.shell_blocks);
}

#[test]
fn a_misplaced_skip_marker_is_a_problem_not_a_silent_skip() {
    // Text between the marker and the block: the marker does not reach it.
    let parsed = parse("<!-- readme-run: skip x -->\nSome text.\n```sh\nls\n```\n");
    assert!(
        parsed
            .problems
            .iter()
            .any(|p| p.contains("not directly followed")),
        "{:?}",
        parsed.problems
    );
    assert!(
        parsed.problems.iter().any(|p| p.contains("neither run")),
        "{:?}",
        parsed.problems
    );
    let parsed = parse("<!-- readme-run: skip x -->\n```toml\na = 1\n```\n");
    assert!(
        parsed.problems.iter().any(|p| p.contains("```toml")),
        "{:?}",
        parsed.problems
    );
    let parsed = parse("<!-- readme-run: skip -->\n```sh\nls\n```\n");
    assert!(
        parsed
            .problems
            .iter()
            .any(|p| p.contains("without a reason")),
        "{:?}",
        parsed.problems
    );
    let parsed = parse("<!-- readme-run: skp x -->\n");
    assert!(
        parsed.problems.iter().any(|p| p.contains("unknown")),
        "{:?}",
        parsed.problems
    );
    let parsed = parse("```sh\nls\n");
    assert!(
        parsed.problems.iter().any(|p| p.contains("never closes")),
        "{:?}",
        parsed.problems
    );
}

/// scripts/readme-run on FILE (written to a temp file), from the repository root: its exit
/// code and what it logged. A file naming no stack needs no Docker: the runner only checks it.
fn runner_on(name: &str, text: &str) -> (i32, String) {
    let path = std::env::temp_dir().join(format!("readme-blocks-{}-{name}.md", std::process::id()));
    fs::write(&path, text).expect("write a temp file");
    let output = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/readme-run"))
        .arg(&path)
        .current_dir(repo_root())
        .output()
        .expect("bash runs scripts/readme-run");
    let _ = fs::remove_file(&path);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_runner_applies_the_same_rules_before_it_runs_anything() {
    let (code, log) = runner_on("unmarked", "# t\n\n```bash\ntouch /nonexistent/x\n```\n");
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(":3: ```bash block neither run"), "{log}");

    let (code, log) = runner_on(
        "misplaced",
        "<!-- readme-run: skip x -->\ntext\n```sh\nls\n```\n",
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("not directly followed by a shell block"),
        "{log}"
    );

    let (code, log) = runner_on(
        "marked",
        "<!-- readme-run: skip cloud: needs a DigitalOcean account -->\n\n```sh\ndoctl compute droplet list\n```\n",
    );
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("NOT run: cloud: needs a DigitalOcean account\n"),
        "the skipped block is listed with its reason: {log}"
    );

    // Blocks another script runs (here one that scripts/test does run, and is executable).
    let (code, log) = runner_on(
        "external",
        "<!-- readme-run: runner scripts/readme-run demo -->\n<!-- demo: one -->\n```sh\nls\n```\n",
    );
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("block 1 (line 3) run by scripts/readme-run"),
        "{log}"
    );
    let (code, log) = runner_on(
        "external-untagged",
        "<!-- readme-run: runner scripts/readme-run demo -->\n```sh\nls\n```\n",
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(":2: ```sh block neither run by scripts/readme-run"),
        "{log}"
    );
    let (code, log) = runner_on(
        "external-missing",
        "<!-- readme-run: runner scripts/nothing demo -->\n<!-- demo: one -->\n```sh\nls\n```\n",
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("scripts/nothing, which is not an executable script"),
        "{log}"
    );

    let (code, log) = runner_on(
        "unknown-stack",
        "<!-- readme-run: stack moon -->\n```sh\nls\n```\n",
    );
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("scripts/lib/readme-stack-moon.sh"), "{log}");
}

#[test]
fn the_runner_accepts_every_doc_without_docker() {
    let root = repo_root();
    for file in shipped_markdown() {
        let text = read(&file);
        if parse(&text).stack.is_some() {
            continue;
        }
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let (code, log) = runner_on(&name, &text);
        assert_eq!(
            code,
            0,
            "{}: {log}",
            file.strip_prefix(&root).unwrap_or(&file).display()
        );
    }
}
