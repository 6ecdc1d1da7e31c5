//! How an action's image is resolved when it is dispatched (and shown by
//! `kiln plan`): the server's `--image-rewrite` rules, and the steps that
//! are terminal because of what their image is.
//!
//! Tinkerbell templates name the hub's images (`quay.io/tinkerbell/actions/
//! image2disk:latest`), which a site without internet cannot pull and may
//! mirror. A rewrite rule `FROM=TO` replaces the prefix FROM of an image
//! name with TO; the longest matching FROM wins. Workflows keep the names
//! their template wrote, so a changed rule applies to actions dispatched
//! after it.

use kiln_documents::{ImageRef, PlannedAction};

/// The `--image-rewrite` rules, longest prefix first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRewrites {
    rules: Vec<(String, String)>,
}

impl ImageRewrites {
    /// Parses `FROM=TO` rules; an error names the rule and what is wrong.
    pub fn parse(rules: &[String]) -> Result<Self, String> {
        let mut parsed: Vec<(String, String)> = Vec::new();
        for rule in rules {
            let bad = |why: &str| {
                format!(
                    "--image-rewrite {rule:?}: {why} (expected FROM=TO, e.g. quay.io/tinkerbell/actions/=registry.local/kiln/actions/)"
                )
            };
            let (from, to) = rule.split_once('=').ok_or_else(|| bad("no `=`"))?;
            let (from, to) = (from.trim(), to.trim());
            if from.is_empty() || to.is_empty() {
                return Err(bad("FROM and TO must not be empty"));
            }
            if parsed.iter().any(|(f, _)| f == from) {
                return Err(bad("FROM is given twice"));
            }
            parsed.push((from.to_string(), to.to_string()));
        }
        // Longest FROM first: the first match is the most specific rule.
        parsed.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Self { rules: parsed })
    }

    /// `image` with the longest matching prefix replaced, or `None` when no
    /// rule matches.
    pub fn apply(&self, image: &str) -> Option<String> {
        self.rules.iter().find_map(|(from, to)| image.strip_prefix(from.as_str()).map(|rest| format!("{to}{rest}")))
    }

    /// `image` as it is pulled: rewritten, or as it is.
    pub fn resolve(&self, image: &str) -> String {
        self.apply(image).unwrap_or_else(|| image.to_string())
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Repository names (the last path segment) of images whose action ends
/// the agent's life: the hub's `kexec` (it loads a kernel and jumps into
/// it, never returning), a `reboot` image (sysrq or `reboot -f` with `pid:
/// host`), and kiln's own kexec. A Tinkerbell template cannot say
/// `terminal: true`, so kiln infers it from these names.
const TERMINAL_REPOSITORIES: [&str; 2] = ["kexec", "reboot"];

/// Whether the image `name` is one of the kexec/reboot images.
pub fn is_terminal_image(name: &str) -> bool {
    ImageRef::parse(name).is_ok_and(|image| {
        let last = image.repository.rsplit('/').next().unwrap_or_default();
        TERMINAL_REPOSITORIES.contains(&last)
    })
}

/// The action as it is dispatched: its image rewritten, and terminal when
/// the template said so or its image (as written or rewritten) is a
/// kexec/reboot image.
pub fn dispatched(rewrites: &ImageRewrites, mut action: PlannedAction) -> PlannedAction {
    if action.image.is_empty() {
        return action;
    }
    let resolved = rewrites.resolve(&action.image);
    action.terminal = action.terminal || is_terminal_image(&action.image) || is_terminal_image(&resolved);
    action.image = resolved;
    action
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: &[&str]) -> ImageRewrites {
        ImageRewrites::parse(&r.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_the_rest_is_kept() {
        let r = rules(&[
            "quay.io/=mirror.local/quay/",
            "quay.io/tinkerbell/actions/=reg.local:5000/kiln/actions/",
            "quay.io/tinkerbell-actions/=reg.local:5000/kiln/actions/",
        ]);
        assert_eq!(
            r.apply("quay.io/tinkerbell/actions/image2disk:latest").as_deref(),
            Some("reg.local:5000/kiln/actions/image2disk:latest")
        );
        assert_eq!(
            r.apply("quay.io/tinkerbell-actions/kexec:v1.0.0").as_deref(),
            Some("reg.local:5000/kiln/actions/kexec:v1.0.0")
        );
        assert_eq!(r.apply("quay.io/other/thing:1").as_deref(), Some("mirror.local/quay/other/thing:1"));
        assert_eq!(r.apply("ghcr.io/x/y:1"), None);
        assert_eq!(r.resolve("ghcr.io/x/y:1"), "ghcr.io/x/y:1");
        // The order given does not matter.
        let reversed = rules(&[
            "quay.io/tinkerbell-actions/=reg.local:5000/kiln/actions/",
            "quay.io/tinkerbell/actions/=reg.local:5000/kiln/actions/",
            "quay.io/=mirror.local/quay/",
        ]);
        assert_eq!(reversed, r);
    }

    #[test]
    fn bad_rules_are_named() {
        for (rule, why) in [("quay.io", "no `=`"), ("=x/", "must not be empty"), ("quay.io/=", "must not be empty")] {
            let err = ImageRewrites::parse(&[rule.to_string()]).unwrap_err();
            assert!(err.contains(rule) && err.contains(why), "{err}");
        }
        let err = ImageRewrites::parse(&["a/=b/".into(), "a/=c/".into()]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn kexec_and_reboot_images_are_terminal() {
        for terminal in [
            "quay.io/tinkerbell/actions/kexec:latest",
            "quay.io/tinkerbell-actions/kexec:v1.0.0",
            "quay.io/tinkerbell/actions/reboot",
            "127.0.0.1:5000/kiln/actions/kexec:0.1.0",
            "kexec",
        ] {
            assert!(is_terminal_image(terminal), "{terminal}");
        }
        for not in [
            "quay.io/tinkerbell/actions/image2disk:latest",
            "ghcr.io/jacobweinstock/waitdaemon:latest",
            "reg/kexec-tools:1",
            "reg/kexec/helper:1",
            "",
        ] {
            assert!(!is_terminal_image(not), "{not}");
        }
    }

    #[test]
    fn dispatch_rewrites_and_infers_terminal() {
        let r =
            rules(&["quay.io/tinkerbell/actions/=reg.local/kiln/actions/", "hub/boot=reg.local/kiln/actions/kexec"]);
        let action = |image: &str| PlannedAction { image: image.into(), ..Default::default() };
        let a = dispatched(&r, action("quay.io/tinkerbell/actions/kexec:latest"));
        assert_eq!((a.image.as_str(), a.terminal), ("reg.local/kiln/actions/kexec:latest", true));
        let a = dispatched(&r, action("quay.io/tinkerbell/actions/writefile:latest"));
        assert_eq!((a.image.as_str(), a.terminal), ("reg.local/kiln/actions/writefile:latest", false));
        let a = dispatched(&r, action("hub/boot:1"));
        assert!(a.terminal, "terminal by the rewritten name");
        let explicit = PlannedAction { terminal: true, ..action("reg/own/fire:1") };
        assert!(dispatched(&r, explicit).terminal, "an explicit terminal stays");
        let builtin = PlannedAction { builtin: "reboot".into(), terminal: true, ..Default::default() };
        assert_eq!(dispatched(&r, builtin.clone()), builtin);
    }
}
