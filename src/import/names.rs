//! Names: the Compose project name (as Compose derives it) and kapell's stricter stack and
//! service names (`[a-z][a-z0-9-]{0,31}`).

use std::path::Path;

/// The Compose project name, by Compose's precedence: `COMPOSE_PROJECT_NAME`, the top-level
/// `name`, else the project directory's name lowercased with everything but `a-z0-9_-` removed,
/// and leading `_` and `-` trimmed.
/// Compose prefixes named volumes (`<project>_<volume>`) and built images with it.
pub fn compose_project_name(name: Option<&str>, lookup: &dyn Fn(&str) -> Option<String>, dir: &Path) -> String {
    if let Some(n) = lookup("COMPOSE_PROJECT_NAME").filter(|n| !n.is_empty()) {
        return n;
    }
    if let Some(n) = name {
        return n.to_string();
    }
    let base = dir.file_name().map(|b| b.to_string_lossy().to_lowercase()).unwrap_or_default();
    let kept: String =
        base.chars().filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-').collect();
    // As Compose's NormalizeProjectName: a project never starts with `_` or `-` (`_shop` is `shop`,
    // and its volumes `shop_data`).
    kept.trim_start_matches(['_', '-']).to_string()
}

/// `name` made a valid kapell name: lowercase, `_`, `.` and blanks become `-`, other characters
/// are dropped, a leading digit or '-' gets an `s` in front (`s-…`), at most 32 characters.
/// Returns None when nothing usable is left.
pub fn kapell_name(name: &str) -> Option<String> {
    let mut out: String = name
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            '_' | '.' | ' ' => Some('-'),
            _ => None,
        })
        .collect();
    if out.is_empty() {
        return None;
    }
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "s-");
    }
    out.truncate(32);
    crate::names::check_name("service", &out).ok().map(|()| out)
}

/// The stack name for a Compose project name, and whether it had to change.
pub fn stack_name_from(project: &str) -> Result<(String, bool), String> {
    match kapell_name(project) {
        Some(name) if crate::names::check_stack_name(&name).is_err() => Err(format!(
            "the Compose project name {project:?} would be the stack `{name}`, a reserved name; give another with --stack"
        )),
        Some(name) => {
            let changed = name != project;
            Ok((name, changed))
        }
        None => Err(format!("the Compose project name {project:?} cannot be made a stack name; give one with --stack")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kapell_names() {
        assert_eq!(kapell_name("web").as_deref(), Some("web"));
        assert_eq!(kapell_name("My_App.v2").as_deref(), Some("my-app-v2"));
        assert_eq!(kapell_name("2fa").as_deref(), Some("s-2fa"));
        assert_eq!(kapell_name("_private").as_deref(), Some("s--private"));
        assert_eq!(kapell_name(&"x".repeat(40)).map(|n| n.len()), Some(32));
        assert_eq!(kapell_name("ü"), None);
    }

    #[test]
    fn project_names_follow_compose_precedence() {
        let none = |_: &str| None;
        let env = |k: &str| (k == "COMPOSE_PROJECT_NAME").then(|| "fromenv".to_string());
        assert_eq!(compose_project_name(None, &none, Path::new("/srv/My Blog.v2")), "myblogv2");
        assert_eq!(compose_project_name(None, &none, Path::new("/srv/_-shop")), "shop", "as Compose trims them");
        assert_eq!(compose_project_name(Some("named"), &none, Path::new("/srv/x")), "named");
        assert_eq!(compose_project_name(Some("named"), &env, Path::new("/srv/x")), "fromenv");
    }

    #[test]
    fn stack_names() {
        assert_eq!(stack_name_from("blog"), Ok(("blog".to_string(), false)));
        assert_eq!(stack_name_from("my_blog"), Ok(("my-blog".to_string(), true)));
        assert!(stack_name_from("").is_err());
    }
}
