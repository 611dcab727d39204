//! Loading, layering and error reporting.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(text: Option<&str>, pairs: &[(&str, &str)]) -> Result<Settings, ConfigErrors> {
    Settings::from_parts(Some(Path::new("ross.toml")), text, env(pairs))
}

#[test]
fn defaults_follow_the_spec() {
    let s = Settings::default();
    assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
    assert!(s.whitelist.enabled);
    let sizes: Vec<String> = s.whitelist.sizes.iter().map(ToString::to_string).collect();
    assert_eq!(sizes, DEFAULT_WHITELIST);
    assert_eq!(s.limits.max_width, 2000);
    assert_eq!(s.limits.max_source_bytes, 50 << 20);
    assert_eq!(s.limits.max_source_pixels, 50_000_000);
    assert_eq!(s.limits.max_queue, 256);
    assert_eq!(s.limits.max_original_streams, 64);
    assert_eq!(s.server.send_timeout, Duration::from_secs(30));
    assert_eq!(s.limits.render_timeout, Duration::from_secs(10));
    assert_eq!(s.cache.max_age, Duration::from_secs(604_800));
    assert_eq!(s.output.jpeg_quality, 90);
    assert!(s.serve_originals);
    assert_eq!(
        s.source,
        SourceSettings::Local {
            root: "samples".into(),
            timeout: Duration::from_secs(5),
        }
    );
}

#[test]
fn env_overrides_file_and_lists_are_comma_separated() {
    let s = load(
        Some("[whitelist]\nsizes = [\"10x10\"]\n[limits]\nmax_width = 500\n"),
        &[
            ("ROSS__WHITELIST__SIZES", "72x72, 200x250"),
            ("ROSS__DATA_DIR", "/var/lib/ross"),
        ],
    )
    .unwrap();
    assert_eq!(
        s.whitelist.sizes,
        vec![
            Size {
                width: 72,
                height: 72
            },
            "200x250".parse().unwrap()
        ]
    );
    assert_eq!(s.limits.max_width, 500);
    assert_eq!(s.data_dir, PathBuf::from("/var/lib/ross"));
    assert_eq!(s.cache.dir, PathBuf::from("/var/lib/ross/cache"));
}

#[test]
fn every_bad_key_is_reported_at_once_with_its_name() {
    let err = load(
        Some("[limits]\nmax_width = 0\nmax_hieght = 3\n[output]\njpeg_quality = \"high\"\n"),
        &[
            ("ROSS__SERVER__LISTEN", "localhost"),
            ("ROSS__WHITELIST__ENABLED", "maybe"),
        ],
    )
    .unwrap_err();
    let text = err.to_string();
    let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "limits.max_width",
        "limits.max_hieght",
        "output.jpeg_quality",
        "server.listen",
        "whitelist.enabled",
    ] {
        assert!(keys.contains(&key), "{key} missing from {text}");
    }
    assert!(text.contains("from ROSS__SERVER__LISTEN"), "{text}");
    assert!(
        text.contains("expected an integer from 1 to 65500, got 0"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 5, "one line per error: {text}");
}

#[test]
fn unknown_environment_keys_are_errors() {
    let err = load(None, &[("ROSS__LIMITS__MAX_WIDHT", "10")]).unwrap_err();
    assert_eq!(err.0[0].key, "limits.max_widht");
    assert_eq!(
        err.0[0].origin,
        Origin::Env("ROSS__LIMITS__MAX_WIDHT".into())
    );
}

#[test]
fn whitelist_sizes_are_validated() {
    let err = load(None, &[("ROSS__WHITELIST__SIZES", "72x72,0x5,3000x10,abc")]).unwrap_err();
    assert_eq!(err.0.len(), 3, "{err}");
}

#[test]
fn broken_toml_names_the_file() {
    let err = load(Some("[limits\n"), &[]).unwrap_err();
    assert!(err.to_string().contains("ross.toml"), "{err}");
}

#[test]
fn s3_source_reads_its_keys_and_normalises_the_prefix() {
    let s = load(
        Some("[source]\nkind = \"local\"\nroot = \"/srv/media\"\nbucket = \"shop\"\n"),
        &[
            ("ROSS__SOURCE__KIND", "s3"),
            ("ROSS__SOURCE__PREFIX", "/originals/"),
            ("ROSS__SOURCE__ENDPOINT", "http://127.0.0.1:9000"),
            ("ROSS__SOURCE__FORCE_PATH_STYLE", "true"),
        ],
    )
    .unwrap();
    assert_eq!(
        s.source,
        SourceSettings::S3(S3Settings {
            bucket: "shop".into(),
            region: None,
            endpoint: Some("http://127.0.0.1:9000".into()),
            force_path_style: true,
            prefix: "originals/".into(),
            timeout: Duration::from_millis(5000),
            retries: 2,
        })
    );
    let shown = s.effective();
    assert!(shown.contains(&("source.prefix".into(), "\"originals/\"".into())));
    assert!(!shown.iter().any(|(k, _)| k == "source.root"));
}

#[test]
fn s3_source_needs_a_bucket_and_a_real_endpoint() {
    let err = load(
        None,
        &[
            ("ROSS__SOURCE__KIND", "s3"),
            ("ROSS__SOURCE__ENDPOINT", "127.0.0.1:9000"),
            ("ROSS__SOURCE__RETRIES", "-1"),
        ],
    )
    .unwrap_err();
    let mut keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["source.bucket", "source.endpoint", "source.retries"],
        "{err}"
    );
    let err = load(None, &[("ROSS__SOURCE__KIND", "gcs")]).unwrap_err();
    assert!(
        err.to_string().contains("expected \"local\" or \"s3\""),
        "{err}"
    );
}

#[test]
fn size_parsing_is_canonical() {
    assert_eq!(
        "300x200".parse::<Size>().unwrap(),
        Size {
            width: 300,
            height: 200
        }
    );
    for bad in ["0x10", "010x10", "+1x1", "10", "x10", "10x", "-1x5"] {
        assert!(bad.parse::<Size>().is_err(), "{bad}");
    }
}

/// The documented example must load, hold only real keys, and document every key.
#[test]
fn example_file_documents_every_key_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ross.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let s = Settings::load(Some(&path), std::iter::empty()).unwrap();
    let mut expected = Settings::default();
    expected.plugins.dir = s.plugins.dir.clone();
    expected.limits.max_concurrent_renders = s.limits.max_concurrent_renders;
    expected.limits.worker_memory_bytes = s.limits.worker_memory_bytes;
    expected.origins = s.origins.clone();
    assert_eq!(s, expected, "the example's values must be the defaults");
    let s3 = Settings::from_parts(
        None,
        None,
        env(&[("ROSS__SOURCE__KIND", "s3"), ("ROSS__SOURCE__BUCKET", "b")]),
    )
    .unwrap();
    let cluster = Settings::from_parts(
        None,
        None,
        env(&[
            ("ROSS__CLUSTER__ENABLED", "true"),
            ("ROSS__CLUSTER__BUCKET", "b"),
        ]),
    )
    .unwrap();
    for (key, _) in Settings::default()
        .effective()
        .into_iter()
        .chain(s3.effective())
        .chain(cluster.effective())
    {
        let name = key.rsplit('.').next().unwrap();
        assert!(
            text.contains(&format!("{name} =")),
            "{key} not in ross.example.toml"
        );
        assert!(
            text.contains(&env_name(&key)),
            "{} not in ross.example.toml",
            env_name(&key)
        );
    }
}

#[test]
fn a_cluster_takes_the_s3_source_s_connection_unless_told_otherwise() {
    let s3 = [
        ("ROSS__SOURCE__KIND", "s3"),
        ("ROSS__SOURCE__BUCKET", "photos"),
        ("ROSS__SOURCE__ENDPOINT", "http://127.0.0.1:9000"),
        ("ROSS__SOURCE__FORCE_PATH_STYLE", "true"),
        ("ROSS__SOURCE__PREFIX", "originals"),
        ("ROSS__CLUSTER__ENABLED", "true"),
    ];
    let s = load(None, &s3).unwrap();
    let c = s.cluster.unwrap();
    assert_eq!(c.store.bucket, "photos");
    assert_eq!(c.store.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert!(c.store.force_path_style);
    assert_eq!(
        c.store.prefix, "ross-cluster/",
        "the cluster's own folder, not the source's"
    );
    assert_eq!(c.poll_interval, Duration::from_secs(2));
    assert_eq!(c.advertise, "127.0.0.1:8080");
    let mut own = s3.to_vec();
    own.extend([
        ("ROSS__CLUSTER__BUCKET", "state"),
        ("ROSS__CLUSTER__PREFIX", "/shop/cluster/"),
        ("ROSS__CLUSTER__ENDPOINT", "https://s3.example.com"),
    ]);
    let c = load(None, &own).unwrap().cluster.unwrap();
    assert_eq!(
        (c.store.bucket.as_str(), c.store.prefix.as_str()),
        ("state", "shop/cluster/")
    );
    assert_eq!(c.store.endpoint.as_deref(), Some("https://s3.example.com"));
    // Off by default; a local source needs a bucket named; the prefix cannot be the root.
    assert!(load(None, &[]).unwrap().cluster.is_none());
    let err = load(None, &[("ROSS__CLUSTER__ENABLED", "true")]).unwrap_err();
    assert!(err.to_string().contains("cluster.bucket"), "{err}");
    let err = load(
        None,
        &[
            ("ROSS__CLUSTER__ENABLED", "true"),
            ("ROSS__CLUSTER__BUCKET", "b"),
            ("ROSS__CLUSTER__PREFIX", "/"),
        ],
    )
    .unwrap_err();
    assert!(err.to_string().contains("cluster.prefix"), "{err}");
    let err = load(None, &[("ROSS__WHITELIST__SOURCE", "file")]).unwrap_err();
    assert!(err.to_string().contains("whitelist.source"), "{err}");
}

#[test]
fn cache_and_data_folders_may_not_overlap_the_media_root() {
    let media = tempfile::tempdir().unwrap();
    let root = media.path().to_str().unwrap().to_owned();
    let refused = |pairs: &[(&str, String)], key: &str, word: &str| {
        let mut env = vec![("ROSS__SOURCE__ROOT", root.clone())];
        env.extend(pairs.iter().map(|(k, v)| (*k, v.clone())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let err = load(None, &env).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|e| e.key == key && e.message.contains(word)),
            "{key} {word}: {err}"
        );
    };
    let other = tempfile::tempdir().unwrap();
    let elsewhere = other.path().to_str().unwrap().to_owned();
    refused(
        &[("ROSS__CACHE__DIR", root.clone())],
        "cache.dir",
        "is the media root",
    );
    refused(
        &[("ROSS__CACHE__DIR", format!("{root}/./renders/../cache"))],
        "cache.dir",
        "lies inside",
    );
    refused(
        &[("ROSS__CACHE__DIR", format!("{root}/.."))],
        "cache.dir",
        "contains",
    );
    refused(
        &[
            ("ROSS__DATA_DIR", format!("{root}/state")),
            ("ROSS__CACHE__DIR", format!("{elsewhere}/cache")),
        ],
        "data_dir",
        "lies inside",
    );
    refused(
        &[
            ("ROSS__DATA_DIR", format!("{elsewhere}/cache/data")),
            ("ROSS__CACHE__DIR", format!("{elsewhere}/cache")),
        ],
        "data_dir",
        "inside cache.dir",
    );
    // A symbolic link to the media root is the media root.
    let link = other.path().join("link");
    std::os::unix::fs::symlink(media.path(), &link).unwrap();
    refused(
        &[("ROSS__CACHE__DIR", format!("{}/cache", link.display()))],
        "cache.dir",
        "lies inside",
    );
    let fine = load(
        None,
        &[
            ("ROSS__SOURCE__ROOT", root.as_str()),
            ("ROSS__DATA_DIR", &format!("{elsewhere}/data")),
        ],
    )
    .unwrap();
    assert_eq!(
        fine.cache.dir,
        PathBuf::from(format!("{elsewhere}/data/cache"))
    );
}

#[test]
fn cache_bound_and_admin_settings() {
    let s = Settings::default();
    assert_eq!(s.cache.max_bytes, 10 << 30);
    assert!(s.admin.enabled && s.admin.token.is_none());
    let s = load(
        None,
        &[
            ("ROSS__CACHE__MAX_BYTES", "1500000"),
            ("ROSS__ADMIN__TOKEN", "a-long-enough-secret"),
        ],
    )
    .unwrap();
    assert_eq!(s.cache.max_bytes, 1_500_000);
    assert!(!format!("{s:?}").contains("a-long-enough-secret"));
    let err = load(None, &[("ROSS__ADMIN__TOKEN", "short")]).unwrap_err();
    assert_eq!(err.0[0].key, "admin.token");
    let err = load(None, &[("ROSS__CACHE__MAX_BYTES", "0")]).unwrap_err();
    assert_eq!(err.0[0].key, "cache.max_bytes");
}

#[test]
fn output_formats_are_an_ordered_list_ending_in_jpeg() {
    let s = Settings::default();
    assert_eq!(s.output.formats, [OutputFormat::Jpeg]);
    assert_eq!(
        (
            s.output.webp_quality,
            s.output.avif_quality,
            s.output.avif_speed
        ),
        (
            DEFAULT_WEBP_QUALITY,
            DEFAULT_AVIF_QUALITY,
            DEFAULT_AVIF_SPEED
        )
    );
    let s = load(None, &[("ROSS__OUTPUT__FORMATS", "avif, WebP,jpeg")]).unwrap();
    let all = [OutputFormat::Avif, OutputFormat::Webp, OutputFormat::Jpeg];
    assert_eq!(s.output.formats, all);
    // JPEG is the fallback whether listed or not.
    let s = load(Some("[output]\nformats = [\"webp\"]\n"), &[]).unwrap();
    assert_eq!(s.output.formats, [OutputFormat::Webp, OutputFormat::Jpeg]);
    for (bad, says) in [
        ("jpeg,webp", "must come last"),
        ("webp,webp", "listed twice"),
        ("gif", "not a format"),
    ] {
        let e = load(None, &[("ROSS__OUTPUT__FORMATS", bad)]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("ROSS__OUTPUT__FORMATS") && text.contains(says),
            "{bad}: {text}"
        );
    }
    let e = load(None, &[("ROSS__OUTPUT__AVIF_SPEED", "11")]).unwrap_err();
    assert!(e.to_string().contains("output.avif_speed") || e.to_string().contains("AVIF_SPEED"));
}

/// Regression: `limits.max_width` was accepted up to 100000, and `/100000/160/...` was a 500
/// (libjpeg writes at most 65500 a side).
#[test]
fn sides_are_limited_to_what_jpeg_can_write() {
    assert!(load(None, &[("ROSS__LIMITS__MAX_WIDTH", "65500")]).is_ok());
    let refused = load(None, &[("ROSS__LIMITS__MAX_HEIGHT", "65501")]).unwrap_err();
    assert!(
        refused.to_string().contains("limits.max_height"),
        "{refused}"
    );
    for format in OutputFormat::ALL {
        let side = HARD_MAX_SIDE as u32;
        let fits = format.fits(Size {
            width: side,
            height: 1,
        });
        assert_eq!(fits, format != OutputFormat::Webp, "{format:?}");
    }
}

/// Regression: a plugin folder that is ross's data folder (or holds its cache) was accepted.
#[test]
fn the_plugin_folder_stays_apart_from_rosss_folders() {
    let dir = std::env::temp_dir().join(format!("ross-config-{}", std::process::id()));
    let data = dir.join("data");
    let data_s = data.to_str().unwrap();
    let clash = |plugins: &str| {
        let refused = load(
            None,
            &[("ROSS__DATA_DIR", data_s), ("ROSS__PLUGINS__DIR", plugins)],
        )
        .unwrap_err()
        .to_string();
        assert!(refused.contains("plugins.dir"), "{refused}");
    };
    clash(data_s);
    clash(data.join("cache").join("p").to_str().unwrap());
    clash(data.join("loaded-plugins").to_str().unwrap());
    clash(dir.to_str().unwrap());
    let apart = dir.join("plugins");
    assert!(load(
        None,
        &[
            ("ROSS__DATA_DIR", data_s),
            ("ROSS__PLUGINS__DIR", apart.to_str().unwrap())
        ]
    )
    .is_ok());
}

/// Regression: credentials written into the S3 endpoint or the statsd host were shown by
/// `check-config` and on the admin settings page.
#[test]
fn credentials_in_urls_are_never_shown() {
    assert_eq!(
        redact_userinfo("https://key:secret@s3.example.com:9000/path?x=1"),
        "https://<redacted>@s3.example.com:9000/path?x=1"
    );
    assert_eq!(
        redact_userinfo("user:pw@statsd:8125"),
        "<redacted>@statsd:8125"
    );
    assert_eq!(
        redact_userinfo("http://minio:9000/a@b"),
        "http://minio:9000/a@b"
    );
    let s = load(
        None,
        &[
            ("ROSS__SOURCE__KIND", "s3"),
            ("ROSS__SOURCE__BUCKET", "b"),
            (
                "ROSS__SOURCE__ENDPOINT",
                "http://AKIA:verysecret@127.0.0.1:9000",
            ),
            ("ROSS__STATSD__HOST", "u:statsdsecret@127.0.0.1"),
        ],
    )
    .unwrap();
    let shown = format!("{:?}", s.effective());
    assert!(
        !shown.contains("verysecret") && !shown.contains("statsdsecret"),
        "{shown}"
    );
    assert!(shown.contains("127.0.0.1:9000"), "{shown}");
}

#[test]
fn each_given_key_knows_where_it_came_from() {
    let s = load(
        Some("[limits]\nmax_width = 3000\nmax_height = 3000\n"),
        &[("ROSS__LIMITS__MAX_HEIGHT", "2500")],
    )
    .unwrap();
    assert_eq!(
        s.origins.get("limits.max_width"),
        Some(&Origin::File("ross.toml".into()))
    );
    // The variable wins over the file, and says so.
    assert_eq!(s.limits.max_height, 2500);
    assert_eq!(
        s.origins.get("limits.max_height"),
        Some(&Origin::Env("ROSS__LIMITS__MAX_HEIGHT".into()))
    );
    assert_eq!(s.origins.get("cache.max_bytes"), None, "a default");
    // Not given and not a constant: computed from other settings, and said so.
    assert_eq!(
        s.origins.get("cache.dir"),
        Some(&Origin::Derived("data_dir"))
    );
    assert!(matches!(
        s.origins.get("limits.worker_memory_bytes"),
        Some(Origin::Derived(from)) if from.contains("max_source_bytes")
    ));
    // Every key effective() shows is one the reader knows by that name.
    let keys: Vec<String> = s.effective().into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&"limits.max_width".to_owned()));
}
