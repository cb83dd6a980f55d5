//! Roles and sign-in providers, with their database spellings.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "user" => Some(Self::User),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProvider {
    Password,
    Google,
    Microsoft,
}

impl AuthProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Google => "google",
            Self::Microsoft => "microsoft",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "password" => Some(Self::Password),
            "google" => Some(Self::Google),
            "microsoft" => Some(Self::Microsoft),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_spellings_round_trip() {
        for role in [Role::User, Role::Admin] {
            assert_eq!(Role::from_db(role.as_str()), Some(role));
        }
        for p in [
            AuthProvider::Password,
            AuthProvider::Google,
            AuthProvider::Microsoft,
        ] {
            assert_eq!(AuthProvider::from_db(p.as_str()), Some(p));
        }
        assert_eq!(Role::from_db("root"), None);
    }
}
