//! A secret in memory: a password, a registry token, a decrypted value.
//! Below every layer that handles one (the secrets task, the ECR login,
//! reading tfvars), so none of them imports another to name the type.

use std::{ffi::OsStr, fmt};

use zeroize::Zeroizing;

/// A password or a decrypted value. `Debug` never shows it, and its memory
/// is overwritten when dropped.
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: String) -> SecretValue {
        SecretValue(Zeroizing::new(value))
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl AsRef<OsStr> for SecretValue {
    fn as_ref(&self) -> &OsStr {
        OsStr::new(self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_never_show_in_debug_output() {
        let value = SecretValue::new("hunter2".to_owned());
        assert_eq!(format!("{value:?}"), "SecretValue(<redacted>)");
        assert_eq!(format!("{:?}", Some(&value)), "Some(SecretValue(<redacted>))");
    }
}
