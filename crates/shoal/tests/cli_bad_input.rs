//! Bad input through the command line: every refusal is `Error: …` with exit status 1, names
//! the field or the object it is about and says what to do, and changes nothing; a manager
//! without a leader says why.

mod support;

use support::cluster::Cluster;

/// Runs `args` on the cluster's socket, expecting a refusal; returns the message.
fn refused(c: &Cluster, args: &[&str]) -> String {
    c.shoal(args).failed()
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let mut c = Cluster::start(&[]);

    // Specs the API refuses, naming the field.
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[
                "service", "create", "--name", "bad!name", "--", "sleep", "1",
            ],
            &["spec.annotations.name", "bad!name", "letter or digit"],
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "small",
                "--reserve-memory",
                "1b",
                "--",
                "sleep",
                "1",
            ],
            &["spec.task.resources.reservations.memory_bytes", "at least"],
        ),
        // Flags refused before anything is sent, saying how to write them.
        (
            &[
                "service",
                "create",
                "--name",
                "c1",
                "--constraint",
                "node.labels.zone",
                "--",
                "sleep",
                "1",
            ],
            &["node.labels.zone", "no operator", "key==value"],
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "r1",
                "--update-max-failure-ratio",
                "2",
                "--",
                "sleep",
                "1",
            ],
            &["--update-max-failure-ratio", "from 0 to 1"],
        ),
        (
            &[
                "service", "create", "--name", "p1", "-p", "70000:80", "--", "sleep", "1",
            ],
            &["70000", "not a port number", "8080:80"],
        ),
        (
            &[
                "service", "create", "--name", "s1", "--secret", "nope", "--", "sleep", "1",
            ],
            &["secret nope not found", "create it first"],
        ),
        // Unknown objects, named.
        (&["service", "inspect", "nope"], &["no such service: nope"]),
        (
            &["service", "update", "--replicas", "2", "nope"],
            &["no such service: nope"],
        ),
        (
            &["node", "update", "--availability", "drain", "nope"],
            &["no such node: nope"],
        ),
        (&["secret", "rm", "nope"], &["no such secret: nope"]),
        (&["network", "rm", "nope"], &["nope"]),
        (&["task", "inspect", "nope"], &["nope"]),
    ];
    for (args, expected) in cases {
        let e = refused(&c, args);
        for part in *expected {
            assert!(e.contains(part), "shoal {args:?}: {e:?} lacks {part:?}");
        }
    }
    // Nothing was created by any of them.
    assert_eq!(c.shoal(&["service", "ls", "-q"]).ok(), "");

    // A name in use: refused, the first service untouched.
    c.shoal(&[
        "service", "create", "-d", "--name", "dup", "--", "sleep", "1000",
    ])
    .ok();
    let before = c.inspect("dup");
    let e = refused(
        &c,
        &[
            "service", "create", "-d", "--name", "dup", "--", "sleep", "1",
        ],
    );
    assert!(e.contains("service name dup is already in use"), "{e}");
    let after = c.inspect("dup");
    assert_eq!(before["Version"], after["Version"], "{after}");

    // A manager whose cluster lost its quorum says so, and what to do.
    c.join_manager("m2");
    c.daemon("m1").kill();
    c.socket = c.socket_of("m2");
    let e = c.wait("m2 to see the quorum lost", &[], |c| {
        let run = c.shoal(&["service", "ls"]);
        (run.code == Some(1) && run.stderr.contains("quorum")).then_some(run.stderr)
    });
    assert!(e.starts_with("Error: "), "{e}");
    assert!(e.contains("no leader"), "{e}");
}
