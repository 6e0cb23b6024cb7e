//! The parts of a Dockerfile and a .dockerignore that decide what a build stage sees, and a
//! copy of a build context laid out as that stage's WORKDIR.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// One `COPY` (or `ADD`) of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The stage it copies from (`--from=`), or `None` for the build context.
    pub from: Option<String>,
    /// Its sources.
    pub sources: Vec<String>,
    /// Its destination, as written.
    pub destination: String,
    /// Its line in the Dockerfile, for messages.
    pub line: usize,
}

/// One `FROM` stage.
#[derive(Debug, Default)]
pub struct Stage {
    /// Its `AS` name.
    pub name: Option<String>,
    /// Its last `WORKDIR` (absolute), `/` without one.
    pub workdir: String,
    /// Its copies, in order.
    pub copies: Vec<Copy>,
}

/// The stages of a Dockerfile.
#[derive(Debug)]
pub struct Dockerfile {
    /// In order.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// Reads the instructions that matter here: `FROM`, `WORKDIR`, `COPY` and `ADD`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut stages: Vec<Stage> = Vec::new();
        for (line, instruction) in instructions(text) {
            let (keyword, rest) = instruction
                .split_once(char::is_whitespace)
                .unwrap_or((instruction.as_str(), ""));
            let rest = rest.trim();
            let keyword = keyword.to_ascii_uppercase();
            if keyword == "FROM" {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let name = match words.as_slice() {
                    [.., as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    _ => None,
                };
                stages.push(Stage {
                    name,
                    workdir: "/".into(),
                    copies: Vec::new(),
                });
                continue;
            }
            let Some(stage) = stages.last_mut() else {
                continue;
            };
            match keyword.as_str() {
                "WORKDIR" => stage.workdir = join_posix(&stage.workdir, rest),
                "COPY" | "ADD" => stage.copies.push(parse_copy(rest, line)?),
                _ => {}
            }
        }
        if stages.is_empty() {
            return Err("the Dockerfile has no FROM".into());
        }
        Ok(Self { stages })
    }

    /// The stages that later stages copy from (`COPY --from=`), or the only stage.
    pub fn build_stages(&self) -> Vec<&Stage> {
        let named: Vec<&str> = self
            .stages
            .iter()
            .flat_map(|stage| &stage.copies)
            .filter_map(|copy| copy.from.as_deref())
            .collect();
        let built: Vec<&Stage> = self
            .stages
            .iter()
            .filter(|stage| {
                stage
                    .name
                    .as_deref()
                    .is_some_and(|name| named.contains(&name))
            })
            .collect();
        if built.is_empty() {
            self.stages.iter().rev().take(1).collect()
        } else {
            built
        }
    }
}

/// The instructions of a Dockerfile with their first line: comments dropped, continued lines
/// joined.
fn instructions(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let (start, mut joined) = current.take().unwrap_or((index + 1, String::new()));
        let (body, continued) = match trimmed.strip_suffix('\\') {
            Some(body) => (body, true),
            None => (trimmed, false),
        };
        joined.push_str(body);
        joined.push(' ');
        if continued {
            current = Some((start, joined));
        } else {
            out.push((start, joined.trim().to_string()));
        }
    }
    out.extend(current.map(|(start, joined)| (start, joined.trim().to_string())));
    out
}

/// The arguments of a `COPY`: flags, sources and destination, in shell or JSON form.
fn parse_copy(arguments: &str, line: usize) -> Result<Copy, String> {
    let mut words: Vec<String> = arguments.split_whitespace().map(String::from).collect();
    let mut from = None;
    while words.first().is_some_and(|word| word.starts_with("--")) {
        let flag = words.remove(0);
        if let Some(stage) = flag.strip_prefix("--from=") {
            from = Some(stage.to_string());
        } else if flag.starts_with("--parents") || flag.starts_with("--exclude") {
            return Err(format!(
                "Dockerfile line {line}: this test does not lay out `{flag}`; \
                 teach host/tests/deploy/dockerfile.rs"
            ));
        }
    }
    let rest = words.join(" ");
    if rest.starts_with('[') {
        words = serde_json::from_str(&rest)
            .map_err(|error| format!("Dockerfile line {line}: bad JSON form: {error}"))?;
    }
    let Some(destination) = words.pop() else {
        return Err(format!(
            "Dockerfile line {line}: COPY without a destination"
        ));
    };
    if words.is_empty() {
        return Err(format!("Dockerfile line {line}: COPY without a source"));
    }
    Ok(Copy {
        from,
        sources: words,
        destination,
        line,
    })
}

/// `path` taken from the POSIX directory `base`, without `.` and `..`.
fn join_posix(base: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The patterns of a .dockerignore.
#[derive(Debug, Default)]
pub struct DockerIgnore {
    patterns: Vec<Vec<String>>,
}

impl DockerIgnore {
    /// Reads a .dockerignore (`*`, `?` and `**` patterns; no `!` exceptions).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('!') {
                return Err(format!(
                    ".dockerignore: this test does not read `!` exceptions ({line}); \
                     teach host/tests/deploy/dockerfile.rs"
                ));
            }
            let cleaned = join_posix("/", line);
            patterns.push(
                cleaned
                    .trim_start_matches('/')
                    .split('/')
                    .map(String::from)
                    .collect(),
            );
        }
        Ok(Self { patterns })
    }

    /// Whether the context path `relative` (or a folder it is in) is left out.
    pub fn excludes(&self, relative: &Path) -> bool {
        let parts: Vec<String> = relative
            .components()
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .collect();
        (1..=parts.len()).any(|length| {
            self.patterns
                .iter()
                .any(|pattern| match_parts(pattern, &parts[..length]))
        })
    }
}

/// Whether the path parts match the pattern parts (`**` spans any number of parts).
fn match_parts(pattern: &[String], parts: &[String]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=parts.len()).any(|skip| match_parts(rest, &parts[skip..]))
        }
        Some((first, rest)) => parts.split_first().is_some_and(|(part, others)| {
            match_glob(first.as_bytes(), part.as_bytes()) && match_parts(rest, others)
        }),
    }
}

/// Whether one path part matches one pattern part (`*`, `?`).
fn match_glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| match_glob(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && match_glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && match_glob(rest, &text[1..]),
    }
}

/// Lays out the context copies of `stage` under `root`, which stands for the stage's WORKDIR.
/// Returns the problems: sources that do not exist, are left out by .dockerignore or land
/// outside the WORKDIR.
pub fn lay_out(stage: &Stage, context: &Path, ignore: &DockerIgnore, root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for copy in stage.copies.iter().filter(|copy| copy.from.is_none()) {
        let target = join_posix(&stage.workdir, &copy.destination);
        let inside = if stage.workdir == "/" {
            target.strip_prefix('/')
        } else if target == stage.workdir {
            Some("")
        } else {
            target.strip_prefix(&format!("{}/", stage.workdir))
        };
        let Some(inside) = inside else {
            problems.push(format!(
                "Dockerfile line {}: copies to {target}, outside the WORKDIR {}",
                copy.line, stage.workdir
            ));
            continue;
        };
        let target = root.join(inside);
        let into_folder = copy.sources.len() > 1 || copy.destination.ends_with('/');
        for source in &copy.sources {
            let relative = PathBuf::from(join_posix("/", source).trim_start_matches('/'));
            let from = context.join(&relative);
            if source.contains(['*', '?', '[']) {
                problems.push(format!(
                    "Dockerfile line {}: `{source}` is a pattern; \
                     this test copies named paths only",
                    copy.line
                ));
            } else if !from.exists() {
                problems.push(format!(
                    "Dockerfile line {}: COPY {source}: the repository has no `{}`",
                    copy.line,
                    relative.display()
                ));
            } else if ignore.excludes(&relative) {
                problems.push(format!(
                    "Dockerfile line {}: COPY {source}: \
                     .dockerignore leaves `{}` out of the build context",
                    copy.line,
                    relative.display()
                ));
            } else {
                let to = if from.is_dir() || !into_folder {
                    target.clone()
                } else {
                    target.join(relative.file_name().unwrap_or_default())
                };
                if let Err(error) = copy_tree(context, &relative, &to, ignore) {
                    problems.push(format!("copying `{source}` to {}: {error}", to.display()));
                }
            }
        }
    }
    problems
}

/// Copies the context path `relative` to `to` (a folder's contents into `to`), leaving out what
/// .dockerignore excludes and keeping modification times, so that cargo finds a second run's
/// copy fresh.
fn copy_tree(
    context: &Path,
    relative: &Path,
    to: &Path,
    ignore: &DockerIgnore,
) -> std::io::Result<()> {
    let from = context.join(relative);
    let metadata = fs::symlink_metadata(&from)?;
    if metadata.file_type().is_symlink() {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        return std::os::unix::fs::symlink(fs::read_link(&from)?, to);
    }
    if metadata.is_dir() {
        fs::create_dir_all(to)?;
        for entry in fs::read_dir(&from)? {
            let name = entry?.file_name();
            let inner = relative.join(&name);
            if !ignore.excludes(&inner) {
                copy_tree(context, &inner, &to.join(&name), ignore)?;
            }
        }
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(&from, to)?;
    fs::File::open(to)?.set_modified(metadata.modified()?)
}

/// The path of the context that `mentioned` (an absolute path in a message) stands for, if it
/// lies in `root` and is missing there: its topmost missing folder or file.
pub fn missing_from(root: &Path, mentioned: &str) -> Option<PathBuf> {
    let relative = Path::new(mentioned).strip_prefix(root).ok()?;
    let mut normal = PathBuf::new();
    for part in relative.components() {
        match part {
            Component::ParentDir => {
                normal.pop();
            }
            Component::Normal(name) => {
                normal.push(name);
                if !root.join(&normal).exists() {
                    return Some(normal);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stages_workdirs_and_copies() {
        let dockerfile = Dockerfile::parse(
            "# comment\nFROM rust AS build\nWORKDIR /src\nCOPY a.toml \\\n  b.lock ./\n\
             COPY --chown=1 host host\nFROM debian\nWORKDIR /app\n\
             COPY --from=build /src/x /bin/x\nCOPY [\"schemas\", \"schemas\"]\n",
        )
        .unwrap();
        let build = dockerfile.build_stages();
        assert_eq!(build.len(), 1);
        assert_eq!(build[0].workdir, "/src");
        let sources: Vec<&Vec<String>> = build[0].copies.iter().map(|c| &c.sources).collect();
        assert_eq!(sources, [&vec!["a.toml", "b.lock"], &vec!["host"]]);
        assert_eq!(build[0].copies[0].line, 4);
        let last = &dockerfile.stages[1].copies;
        assert_eq!(last[0].from.as_deref(), Some("build"));
        assert_eq!(last[1].sources, ["schemas"]);
    }

    #[test]
    fn dockerignore_patterns_match_like_docker() {
        let ignore = DockerIgnore::parse("target\n**/target\n/.git\n*.swp\n").unwrap();
        for path in [
            "target",
            "target/release/x",
            "plugins/target",
            "a/b/target/c",
            ".git/HEAD",
        ] {
            assert!(ignore.excludes(Path::new(path)), "{path}");
        }
        for path in ["host/src/lib.rs", "targets", "a/.git", "a/x.swp"] {
            assert!(!ignore.excludes(Path::new(path)), "{path}");
        }
        assert!(DockerIgnore::parse("!keep").is_err());
    }

    #[test]
    fn a_missing_path_is_named_by_its_topmost_missing_part() {
        let root = std::env::temp_dir();
        let mentioned = format!(
            "{}/no-such-dir-deploy-test/rdkafka/Cargo.toml",
            root.display()
        );
        assert_eq!(
            missing_from(&root, &mentioned),
            Some(PathBuf::from("no-such-dir-deploy-test"))
        );
        assert_eq!(missing_from(Path::new("/elsewhere"), &mentioned), None);
    }
}
