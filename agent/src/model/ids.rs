//! Resource ids in EC2's form: a prefix and 17 lowercase hex digits
//! (`ami-0123456789abcdef0`), random so that ids never repeat across the
//! host's lifetime, even after a resource is deleted.

/// What an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Subnet,
    SecurityGroup,
    KeyPair,
    Instance,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Image => "ami-",
            Kind::Subnet => "subnet-",
            Kind::SecurityGroup => "sg-",
            Kind::KeyPair => "key-",
            Kind::Instance => "i-",
        }
    }
}

/// A new random id of `kind`.
pub fn new(kind: Kind) -> String {
    let mut bytes = [0u8; 9];
    // The kernel's generator; failing it, the process cannot make ids at
    // all (and would make colliding ones), so it stops.
    getrandom::getrandom(&mut bytes).expect("the kernel's random number generator");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}{}", kind.prefix(), &hex[..17])
}

/// Whether `id` has the form of an id of `kind` (8 or 17 hex digits, as
/// EC2 accepts both).
pub fn is_valid(kind: Kind, id: &str) -> bool {
    id.strip_prefix(kind.prefix()).is_some_and(|hex| {
        matches!(hex.len(), 8 | 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_ec2s_form_and_differ() {
        let a = new(Kind::SecurityGroup);
        let b = new(Kind::SecurityGroup);
        assert!(is_valid(Kind::SecurityGroup, &a), "{a}");
        assert_ne!(a, b);
        assert!(is_valid(Kind::Image, "ami-0123abcd"));
        assert!(!is_valid(Kind::Image, "ami-0123ABCD"));
        assert!(!is_valid(Kind::Image, "sg-0123abcd"));
        assert!(!is_valid(Kind::Image, "ami-0123abc"));
    }
}
