use super::same_endpoint;

const EKS: &str = "https://ABCDEF0123456789.gr7.eu-west-1.eks.amazonaws.com";

#[test]
fn a_server_is_the_clusters_endpoint_only_when_it_is_the_same_https_origin() {
    let cases: &[(&str, &str, bool)] = &[
        ("the endpoint itself", EKS, true),
        (
            "a trailing slash",
            "https://ABCDEF0123456789.gr7.eu-west-1.eks.amazonaws.com/",
            true,
        ),
        (
            "host case",
            "https://abcdef0123456789.gr7.eu-west-1.eks.amazonaws.com",
            true,
        ),
        (
            "the default port written out",
            "https://ABCDEF0123456789.gr7.eu-west-1.eks.amazonaws.com:443",
            true,
        ),
        (
            "another cluster's endpoint",
            "https://0000000000000000.gr7.eu-west-1.eks.amazonaws.com",
            false,
        ),
        (
            "a host of the attacker's",
            "https://collector.example.com",
            false,
        ),
        (
            "the endpoint as a prefix of another host",
            "https://ABCDEF0123456789.gr7.eu-west-1.eks.amazonaws.com.example.com",
            false,
        ),
        (
            "another port",
            "https://ABCDEF0123456789.gr7.eu-west-1.eks.amazonaws.com:8443",
            false,
        ),
        (
            "plain http",
            "http://ABCDEF0123456789.gr7.eu-west-1.eks.amazonaws.com",
            false,
        ),
        (
            "a path (a proxy in front)",
            "https://ABCDEF0123456789.gr7.eu-west-1.eks.amazonaws.com/proxy",
            false,
        ),
        (
            "user info",
            "https://u@ABCDEF0123456789.gr7.eu-west-1.eks.amazonaws.com",
            false,
        ),
        (
            "another region",
            "https://ABCDEF0123456789.gr7.eu-west-2.eks.amazonaws.com",
            false,
        ),
    ];
    for (case, server, expected) in cases {
        let server = url::Url::parse(server).unwrap();
        assert_eq!(same_endpoint(&server, EKS), *expected, "{case}");
    }
    let server = url::Url::parse(EKS).unwrap();
    for endpoint in [
        "",
        "not a url",
        "http://ABCDEF0123456789.gr7.eu-west-1.eks.amazonaws.com",
    ] {
        assert!(!same_endpoint(&server, endpoint), "endpoint {endpoint:?}");
    }
}
