//! Boot Loader Specification type #1 entries (`/boot/loader/entries/*.conf`).
//!
//! An entry is lines of `key value`; `#` starts a comment. Only the keys a
//! direct kernel boot needs are kept. `initrd` may repeat (microcode first,
//! then the main initramfs) and `options` may repeat (joined with spaces).

use super::version;

/// The parts of one BLS entry that matter for booting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlsEntry {
    /// The entry's file name without `.conf`; the fallback sort key.
    pub id: String,
    /// `version`, if given; the preferred sort key.
    pub version: Option<String>,
    /// `linux`: the kernel's path on the boot partition.
    pub linux: Option<String>,
    /// `initrd` lines, in order.
    pub initrds: Vec<String>,
    /// `options` lines joined, with bootloader variables dropped.
    pub options: String,
}

impl BlsEntry {
    /// Parses the text of `<id>.conf`.
    pub fn parse(id: &str, text: &str) -> Self {
        let mut entry = Self {
            id: id.to_owned(),
            ..Self::default()
        };
        let mut options: Vec<&str> = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(|c: char| c.is_ascii_whitespace())
                .map_or((line, ""), |(k, v)| (k, v.trim()));
            match key {
                "version" if !value.is_empty() => entry.version = Some(value.to_owned()),
                "linux" if !value.is_empty() => entry.linux = Some(value.to_owned()),
                "initrd" if !value.is_empty() => entry.initrds.push(value.to_owned()),
                // GRUB expands `$kernelopts` and friends from its
                // environment block, which is not ours to read; a literal
                // `$word` on the kernel's command line would only confuse
                // it, so such tokens are dropped.
                "options" => {
                    options.extend(value.split_whitespace().filter(|t| !t.starts_with('$')))
                }
                _ => {}
            }
        }
        entry.options = options.join(" ");
        entry
    }

    /// Orders entries, older first: an entry with a `version` (everything
    /// kernel-install writes) ranks above one without, then by version,
    /// then by file name. Comparing a version with a file name
    /// (`<machine-id>-...`) would be meaningless, hence the first rule.
    pub fn cmp_version(&self, other: &Self) -> std::cmp::Ordering {
        let key = |e: &Self| e.version.is_some();
        key(self)
            .cmp(&key(other))
            .then_with(|| match (&self.version, &other.version) {
                (Some(a), Some(b)) => version::compare(a, b),
                _ => std::cmp::Ordering::Equal,
            })
            .then_with(|| version::compare(&self.id, &other.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_fedora_entry() {
        let text = "title Fedora Linux (6.5.6-300.fc39.x86_64)\n\
                    version 6.5.6-300.fc39.x86_64\n\
                    linux /vmlinuz-6.5.6-300.fc39.x86_64\n\
                    initrd /intel-ucode.img\n\
                    initrd /initramfs-6.5.6-300.fc39.x86_64.img\n\
                    options root=UUID=abc ro $kernelopts\n\
                    options   rhgb  quiet\n\
                    # a comment\n\
                    grub_users $grub_users\n";
        let e = BlsEntry::parse("m-6.5.6", text);
        assert_eq!(e.linux.as_deref(), Some("/vmlinuz-6.5.6-300.fc39.x86_64"));
        assert_eq!(
            e.initrds,
            ["/intel-ucode.img", "/initramfs-6.5.6-300.fc39.x86_64.img"]
        );
        assert_eq!(e.options, "root=UUID=abc ro rhgb quiet");
        assert_eq!(e.version.as_deref(), Some("6.5.6-300.fc39.x86_64"));
    }

    #[test]
    fn an_entry_without_keys_is_empty_not_an_error() {
        let e = BlsEntry::parse("x", "linux\n\0\u{feff}garbage\n");
        assert_eq!(e.linux, None);
        assert_eq!(e.version, None);
    }

    #[test]
    fn versioned_entries_outrank_unversioned_ones() {
        let id = "0123456789abcdef0123456789abcdef";
        let rescue = BlsEntry::parse(&format!("{id}-0-rescue"), "linux /r\n");
        let old = BlsEntry::parse("b", "version 6.2.0\n");
        let new = BlsEntry::parse("a", "version 6.10.0\n");
        assert!(old.cmp_version(&rescue).is_gt());
        assert!(new.cmp_version(&old).is_gt());
        assert!(BlsEntry::parse("b", "")
            .cmp_version(&BlsEntry::parse("a", ""))
            .is_gt());
    }
}
