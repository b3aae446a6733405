use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/pbs-cloud.toml"), text)
}

#[test]
fn full_file_parses() {
    let config = parse(
        r#"
listen_addr = "127.0.0.1:8007"
data_dir = "/var/lib/pbs-cloud"

[[tenant]]
id = "acme"

[[datastore]]
name = "store1"
tenant = "acme"
path = "/srv/store1"

[[user]]
userid = "alice@pbs"
tenant = "acme"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$abc$def"

[[token]]
tokenid = "alice@pbs!ci"
secret_hash = "$argon2id$v=19$m=19456,t=2,p=1$abc$def"

[[acl]]
path = "/datastore/store1"
authid = "alice@pbs!ci"
role = "DatastoreBackup"
"#,
    )
    .unwrap();
    assert_eq!(config.listen_addr().unwrap().port(), 8007);
    assert_eq!(config.default_tenant(), "acme");
    assert_eq!(config.datastores[0].name.get_ref(), "store1");
}

#[test]
fn unknown_field_names_line_and_field() {
    let err = parse("listen = \"0.0.0.0:8007\"\n\n[[datastore]]\nname = \"store1\"\nsize = 3\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/etc/pbs-cloud.toml"), "{text}");
    assert!(text.contains("line 5"), "{text}");
    assert!(text.contains("size"), "{text}");
}

#[test]
fn invalid_values_name_line_and_field() {
    let err = parse("[[datastore]]\nname = \"store1\"\n\n[[datastore]]\nname = \"../etc\"\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("line 5") && text.contains("datastore[1].name"),
        "{text}"
    );

    let err = parse("[[datastore]]\nname = \"store1\"\ntenant = \"nobody\"\n").unwrap_err();
    assert!(err.to_string().contains("unknown tenant 'nobody'"), "{err}");

    let err = parse("listen = \"nowhere\"\n").unwrap_err();
    assert!(err.to_string().contains("line 1: listen"), "{err}");

    let err = parse("[[user]]\nuserid = \"bob\"\n").unwrap_err();
    assert!(err.to_string().contains("user[0].userid"), "{err}");

    let err = parse("[[acl]]\npath = \"/datastore/x\"\nauthid = \"a@pbs\"\nrole = \"God\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("unknown role 'God'"), "{err}");
}

#[test]
fn broken_syntax_is_refused() {
    let err = parse("listen = \n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line: 1, .. }), "{err}");
}

#[test]
fn empty_file_is_the_default() {
    let config = parse("").unwrap();
    assert!(config.datastores.is_empty());
    assert_eq!(config.default_tenant(), DEFAULT_TENANT);
}
