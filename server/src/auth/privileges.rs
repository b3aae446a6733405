//! Privileges and the PBS roles that bundle them (docs/protocol.md#privileges-and-roles). A small
//! bitset so permission checks are a single `contains`.

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::AuthError;

/// A set of privileges.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Privileges(u32);

impl Privileges {
    pub const EMPTY: Privileges = Privileges(0);
    pub const AUDIT: Privileges = Privileges(1 << 0);
    pub const ALLOCATE: Privileges = Privileges(1 << 1);
    pub const MODIFY: Privileges = Privileges(1 << 2);
    pub const READ: Privileges = Privileges(1 << 3);
    pub const VERIFY: Privileges = Privileges(1 << 4);
    pub const BACKUP: Privileges = Privileges(1 << 5);
    pub const PRUNE: Privileges = Privileges(1 << 6);
    pub const SYS_AUDIT: Privileges = Privileges(1 << 7);
    pub const SYS_MODIFY: Privileges = Privileges(1 << 8);
    /// Every datastore privilege.
    pub const DATASTORE_ALL: Privileges = Privileges(0b111_1111);
    /// PBS privileges of features this server does not have (ACL editing beyond its own
    /// rules, realms, remotes, tape, the node's console and power). Nothing checks them; the
    /// `Admin` role holds them as in PBS, so permission listings name what PBS names.
    pub const FOREIGN: Privileges = Privileges(((1 << 23) - 1) & !0b1_1111_1111);
    /// Every privilege.
    pub const ALL: Privileges = Privileges((1 << 23) - 1);

    /// True when every privilege in `other` is present.
    pub fn contains(self, other: Privileges) -> bool {
        self.0 & other.0 == other.0
    }
    /// True when at least one privilege in `other` is present.
    pub fn intersects(self, other: Privileges) -> bool {
        self.0 & other.0 != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// PBS privilege names, for diagnostics and `/access/permissions`-style answers.
    pub fn names(self) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(p, _)| self.contains(*p))
            .map(|(_, n)| *n)
            .collect()
    }
}

/// Every privilege with its PBS name, in PBS's alphabetical order.
const NAMES: [(Privileges, &str); 23] = [
    (Privileges::ALLOCATE, "Datastore.Allocate"),
    (Privileges::AUDIT, "Datastore.Audit"),
    (Privileges::BACKUP, "Datastore.Backup"),
    (Privileges::MODIFY, "Datastore.Modify"),
    (Privileges::PRUNE, "Datastore.Prune"),
    (Privileges::READ, "Datastore.Read"),
    (Privileges::VERIFY, "Datastore.Verify"),
    (Privileges(1 << 9), "Permissions.Modify"),
    (Privileges(1 << 10), "Realm.Allocate"),
    (Privileges(1 << 11), "Remote.Audit"),
    (Privileges(1 << 12), "Remote.DatastoreBackup"),
    (Privileges(1 << 13), "Remote.DatastoreModify"),
    (Privileges(1 << 14), "Remote.DatastorePrune"),
    (Privileges(1 << 15), "Remote.Modify"),
    (Privileges(1 << 16), "Remote.Read"),
    (Privileges::SYS_AUDIT, "Sys.Audit"),
    (Privileges(1 << 17), "Sys.Console"),
    (Privileges::SYS_MODIFY, "Sys.Modify"),
    (Privileges(1 << 18), "Sys.PowerManagement"),
    (Privileges(1 << 19), "Tape.Audit"),
    (Privileges(1 << 20), "Tape.Modify"),
    (Privileges(1 << 21), "Tape.Read"),
    (Privileges(1 << 22), "Tape.Write"),
];

impl BitOr for Privileges {
    type Output = Privileges;
    fn bitor(self, rhs: Privileges) -> Privileges {
        Privileges(self.0 | rhs.0)
    }
}

impl BitOrAssign for Privileges {
    fn bitor_assign(&mut self, rhs: Privileges) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Privileges {
    type Output = Privileges;
    fn bitand(self, rhs: Privileges) -> Privileges {
        Privileges(self.0 & rhs.0)
    }
}

impl fmt::Debug for Privileges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Privileges({})", self.names().join("|"))
    }
}

/// PBS's built-in roles as used on ACL entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Admin,
    DatastoreAdmin,
    DatastoreBackup,
    DatastorePowerUser,
    DatastoreReader,
    DatastoreAudit,
    /// Read-only everywhere (datastores and system): what monitoring tokens get.
    Audit,
    NoAccess,
}

impl Role {
    pub fn privileges(self) -> Privileges {
        use Privileges as P;
        match self {
            Role::Admin => P::ALL,
            Role::DatastoreAdmin => P::DATASTORE_ALL,
            Role::DatastoreBackup => P::BACKUP,
            Role::DatastorePowerUser => P::BACKUP | P::PRUNE,
            Role::DatastoreReader => P::AUDIT | P::VERIFY | P::READ,
            Role::DatastoreAudit => P::AUDIT,
            Role::Audit => P::AUDIT | P::SYS_AUDIT,
            Role::NoAccess => P::EMPTY,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "Admin",
            Role::DatastoreAdmin => "DatastoreAdmin",
            Role::DatastoreBackup => "DatastoreBackup",
            Role::DatastorePowerUser => "DatastorePowerUser",
            Role::DatastoreReader => "DatastoreReader",
            Role::DatastoreAudit => "DatastoreAudit",
            Role::Audit => "Audit",
            Role::NoAccess => "NoAccess",
        }
    }
}

impl FromStr for Role {
    type Err = AuthError;
    fn from_str(text: &str) -> Result<Self, AuthError> {
        Ok(match text {
            "Admin" => Role::Admin,
            "DatastoreAdmin" => Role::DatastoreAdmin,
            "DatastoreBackup" => Role::DatastoreBackup,
            "DatastorePowerUser" => Role::DatastorePowerUser,
            "DatastoreReader" => Role::DatastoreReader,
            "DatastoreAudit" => Role::DatastoreAudit,
            "Audit" => Role::Audit,
            "NoAccess" => Role::NoAccess,
            other => {
                return Err(AuthError::Invalid(format!(
                    "unknown role '{other}' (expected Admin, DatastoreAdmin, DatastoreBackup, \
                     DatastorePowerUser, DatastoreReader, DatastoreAudit, Audit or NoAccess)"
                )))
            }
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_to_privileges() {
        let power = Role::DatastorePowerUser.privileges();
        assert!(power.contains(Privileges::BACKUP | Privileges::PRUNE));
        assert!(!power.contains(Privileges::MODIFY));
        assert!(Role::Admin.privileges().contains(Privileges::SYS_MODIFY));
        assert!(!Role::DatastoreAdmin
            .privileges()
            .contains(Privileges::SYS_AUDIT));
        assert!(Role::NoAccess.privileges().is_empty());
        // Admin holds every PBS privilege, also those of features this server lacks
        let admin = Role::Admin.privileges().names();
        assert_eq!(admin.len(), 23);
        assert!(admin.contains(&"Tape.Write") && admin.contains(&"Permissions.Modify"));
        assert!(!Role::DatastoreAdmin
            .privileges()
            .intersects(Privileges::FOREIGN));
        let mut bits = Privileges::EMPTY;
        for (p, _) in NAMES {
            assert!(!bits.intersects(p), "{p:?} twice");
            bits |= p;
        }
        assert_eq!(bits, Privileges::ALL);
        assert_eq!(
            Privileges::ALL,
            Privileges::DATASTORE_ALL
                | Privileges::SYS_AUDIT
                | Privileges::SYS_MODIFY
                | Privileges::FOREIGN
        );
        let audit = "Audit".parse::<Role>().unwrap().privileges();
        assert!(audit.contains(Privileges::SYS_AUDIT | Privileges::AUDIT));
        assert!(!audit.intersects(Privileges::BACKUP | Privileges::MODIFY | Privileges::READ));
        assert_eq!(
            "DatastoreReader".parse::<Role>().unwrap(),
            Role::DatastoreReader
        );
        assert!("Root".parse::<Role>().is_err());
        assert_eq!(
            (Privileges::READ | Privileges::AUDIT) & Privileges::READ,
            Privileges::READ
        );
    }
}
