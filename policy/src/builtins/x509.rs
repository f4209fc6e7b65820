//! `crypto.x509.parse_certificates`, `crypto.x509.parse_and_verify_certificates`,
//! `crypto.x509.parse_and_verify_certificates_with_options` and
//! `crypto.x509.parse_certificate_request` with OPA's semantics.
//!
//! # Input
//!
//! A string that starts with `-----BEGIN` is PEM: every block must be a `CERTIFICATE` (for a
//! request, `CERTIFICATE REQUEST`). Anything else is standard base64 (line breaks ignored, as Go
//! does) of either PEM or DER; DER may hold several certificates back to back. A string that is
//! none of these is an error (the call is undefined).
//!
//! # Output
//!
//! Objects shaped like OPA's, which are Go's `x509.Certificate` as `encoding/json` writes it:
//! byte strings as standard base64, absent lists as `null`, OIDs as arrays of integers, times
//! as RFC 3339 in UTC, enumerations as Go's integer constants.
//!
//! Rendered certificate fields: `Raw`, `RawTBSCertificate`, `RawSubjectPublicKeyInfo`,
//! `RawSubject`, `RawIssuer`, `Signature`, `SignatureAlgorithm`, `PublicKeyAlgorithm`,
//! `PublicKey` (RSA: `{N, E}`; ECDSA: `{Curve: {}, X, Y}` as Go renders its opaque curve;
//! Ed25519: the key bytes; other key types `null`), `Version` (1 to 3, as Go counts),
//! `SerialNumber` (an integer, arbitrarily large), `Issuer`, `Subject` (`Country`,
//! `Organization`, `OrganizationalUnit`, `Locality`, `Province`, `StreetAddress`, `PostalCode`,
//! `SerialNumber`, `CommonName`, `Names` as `[{Type, Value}]`, `ExtraNames: null`), `NotBefore`,
//! `NotAfter`, `KeyUsage` (Go's bit mask), `Extensions` (`[{Id, Critical, Value}]`),
//! `ExtraExtensions: null`, `UnhandledCriticalExtensions`, `ExtKeyUsage` (Go's constants, in
//! certificate order), `UnknownExtKeyUsage`, `BasicConstraintsValid`, `IsCA`, `MaxPathLen` (-1
//! when a CA sets no limit), `MaxPathLenZero`, `SubjectKeyId`, `AuthorityKeyId`, `OCSPServer`,
//! `IssuingCertificateURL`, `DNSNames`, `EmailAddresses`, `IPAddresses` (as text), `URIs` (Go's
//! `url.URL` struct: `Scheme`, `Opaque`, `User`, `Host`, `Path`, `RawPath`, `OmitHost`,
//! `ForceQuery`, `RawQuery`, `Fragment`, `RawFragment`, which is how OPA renders them),
//! `URIStrings` (the URIs as strings, OPA's addition; `null` when there are none),
//! `PermittedDNSDomainsCritical`, `PermittedDNSDomains`, `ExcludedDNSDomains`,
//! `PermittedIPRanges`, `ExcludedIPRanges` (`[{IP, Mask}]`), `PermittedEmailAddresses`,
//! `ExcludedEmailAddresses`, `PermittedURIDomains`, `ExcludedURIDomains`,
//! `CRLDistributionPoints`, `PolicyIdentifiers`.
//!
//! Not rendered (absent, so a reference to them is undefined): `Policies` (Go's newer `[]OID`),
//! `InhibitAnyPolicy`, `InhibitAnyPolicyZero`, `InhibitPolicyMapping`,
//! `InhibitPolicyMappingZero`, `RequireExplicitPolicy`, `RequireExplicitPolicyZero`,
//! `PolicyMappings`. `URIs[_].User` is `{}` when the URI has user information (Go's `Userinfo`
//! has no exported fields) and `null` otherwise. Subject attributes whose value is not a
//! string type have `Value: null` in `Names`.
//!
//! A certificate request renders `Raw`, `RawTBSCertificateRequest`, `RawSubjectPublicKeyInfo`,
//! `RawSubject`, `Version` (0), `Signature`, `SignatureAlgorithm`, `PublicKeyAlgorithm`,
//! `PublicKey`, `Subject`, `Extensions`, `ExtraExtensions: null`, `DNSNames`,
//! `EmailAddresses`, `IPAddresses`, `URIs`; not the deprecated `Attributes`.
//!
//! # Verification
//!
//! As OPA: the first certificate is the trusted root, the last the leaf, the ones between
//! untrusted intermediates; at least two are needed. The result is `[true, chain]` with the
//! chain leaf first, or `[false, []]`, also when the input cannot be parsed. Following Go's
//! `Certificate.Verify`: chains are built from the leaf through certificates whose subject is
//! the child's issuer, the root tried before intermediates, and the first chain found wins;
//! every certificate must be valid at the current time (or `CurrentTime`, ns); a parent must be
//! a CA (a v3 certificate needs basic constraints with CA set) and, when it has key usage,
//! allow certificate signing; path length limits hold; name constraints (DNS, email, IP, URI)
//! of a CA hold for the subject alternative names below it; a leaf with an unhandled critical
//! extension is refused; and every certificate with extended key usage allows the requested
//! usages (default server authentication; `KeyUsages` in the options). SHA-1 and MD5
//! signatures are refused, as Go does. `DNSName` checks the leaf's DNS names (wildcards in the
//! leftmost label) or, for an IP address, its IP addresses.
//!
//! Signatures are checked with x509-parser (ring): RSA PKCS#1 v1.5 with SHA-256/384/512 (RSA
//! keys of 2048 bits or more), ECDSA P-256/P-384 with SHA-256/384, Ed25519. Go also accepts
//! RSA-PSS, ECDSA with SHA-512, P-521 and 1024-bit RSA keys: chains using them do not verify
//! here. Certificate policies are not validated (Go 1.24 does when policy constraints appear).

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use regorus::value::Object;
use regorus::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::der_parser::asn1_rs::{FromDer, Oid};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension, X509Extension};
use x509_parser::num_bigint::{BigInt, BigUint};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use super::{now_ns, string_arg, Builtin};

/// The x509 builtins.
pub(crate) static BUILTINS: [Builtin; 4] = [
    Builtin {
        name: "crypto.x509.parse_certificates",
        arity: 1,
        call: |args| {
            let input = string_arg(&args[0], "crypto.x509.parse_certificates", "certs")?;
            let der = certificates_der(input)?;
            let certs = parse_all(&der)?;
            Ok(Value::from(
                certs.iter().map(|c| c.render(true)).collect::<Vec<_>>(),
            ))
        },
    },
    Builtin {
        name: "crypto.x509.parse_and_verify_certificates",
        arity: 1,
        call: |args| {
            let input = string_arg(
                &args[0],
                "crypto.x509.parse_and_verify_certificates",
                "certs",
            )?;
            Ok(parse_and_verify(input, &VerifyOptions::default(), true))
        },
    },
    Builtin {
        name: "crypto.x509.parse_and_verify_certificates_with_options",
        arity: 2,
        call: |args| {
            let name = "crypto.x509.parse_and_verify_certificates_with_options";
            let input = string_arg(&args[0], name, "certs")?;
            let Value::Object(_) = &args[1] else {
                anyhow::bail!("{name}: operand options must be an object");
            };
            // OPA returns `[false, []]` for unparsable certificates before it reads the options.
            if certificates_der(input)
                .and_then(|d| parse_all(&d).map(|_| ()))
                .is_err()
            {
                return Ok(unverified());
            }
            let opts = VerifyOptions::from_value(&args[1])?;
            // OPA renders this variant's chain without `URIStrings`.
            Ok(parse_and_verify(input, &opts, false))
        },
    },
    Builtin {
        name: "crypto.x509.parse_certificate_request",
        arity: 1,
        call: |args| {
            let input = string_arg(&args[0], "crypto.x509.parse_certificate_request", "csr")?;
            parse_certificate_request(input)
        },
    },
];

// ----- input decoding -------------------------------------------------------------------------

/// Standard base64 as Go's `StdEncoding` reads it (padding required, stray low bits allowed).
const GO_STD_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

fn go_base64(s: &str) -> anyhow::Result<Vec<u8>> {
    // Go's decoder skips line breaks.
    let cleaned: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    GO_STD_BASE64
        .decode(cleaned)
        .map_err(|e| anyhow::anyhow!("input is neither PEM nor base64: {e}"))
}

fn b64(bytes: &[u8]) -> Value {
    Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The DER of every certificate in `input`, back to back.
fn certificates_der(input: &str) -> anyhow::Result<Vec<u8>> {
    if input.starts_with("-----BEGIN") {
        return pem_der(input.as_bytes(), "CERTIFICATE");
    }
    let bytes = go_base64(input)?;
    if bytes.starts_with(b"-----BEGIN") {
        return pem_der(&bytes, "CERTIFICATE");
    }
    Ok(bytes)
}

fn pem_der(pem_text: &[u8], tag: &str) -> anyhow::Result<Vec<u8>> {
    let blocks = pem::parse_many(pem_text).map_err(|e| anyhow::anyhow!("bad PEM: {e}"))?;
    let mut der = Vec::new();
    for block in blocks {
        if block.tag() != tag {
            anyhow::bail!("PEM block type is '{}', expected {tag}", block.tag());
        }
        der.extend_from_slice(block.contents());
    }
    Ok(der)
}

/// Every certificate of a DER concatenation.
fn parse_all(der: &[u8]) -> anyhow::Result<Vec<Cert<'_>>> {
    let mut rest = der;
    let mut certs = Vec::new();
    while !rest.is_empty() {
        let (remaining, x509) = X509Certificate::from_der(rest)
            .map_err(|e| anyhow::anyhow!("x509: malformed certificate: {e}"))?;
        let raw = &rest[..rest.len() - remaining.len()];
        certs.push(Cert::new(raw, x509)?);
        rest = remaining;
    }
    Ok(certs)
}

// ----- one parsed certificate ----------------------------------------------------------------

/// A certificate and what Go derives from its extensions.
struct Cert<'a> {
    raw: &'a [u8],
    x509: X509Certificate<'a>,
    ext: Extensions<'a>,
}

/// The extension-derived fields of Go's `x509.Certificate` (and `CertificateRequest`).
#[derive(Default)]
struct Extensions<'a> {
    key_usage: u16,
    ext_key_usage: Vec<i64>,
    unknown_ext_key_usage: Vec<Oid<'static>>,
    basic_constraints_valid: bool,
    is_ca: bool,
    max_path_len: i64,
    max_path_len_zero: bool,
    subject_key_id: Option<&'a [u8]>,
    authority_key_id: Option<&'a [u8]>,
    ocsp_server: Vec<String>,
    issuing_certificate_url: Vec<String>,
    has_san: bool,
    dns_names: Vec<String>,
    email_addresses: Vec<String>,
    ip_addresses: Vec<Vec<u8>>,
    uris: Vec<GoUrl>,
    name_constraints: Option<Constraints>,
    crl_distribution_points: Vec<String>,
    policy_identifiers: Vec<Oid<'static>>,
    unhandled_critical: Vec<Oid<'static>>,
}

/// Name constraints as Go keeps them.
#[derive(Default)]
struct Constraints {
    critical: bool,
    permitted_dns: Vec<String>,
    excluded_dns: Vec<String>,
    permitted_ip: Vec<(Vec<u8>, Vec<u8>)>,
    excluded_ip: Vec<(Vec<u8>, Vec<u8>)>,
    permitted_email: Vec<String>,
    excluded_email: Vec<String>,
    permitted_uri: Vec<String>,
    excluded_uri: Vec<String>,
}

/// Extensions Go's parser understands (others that are critical are "unhandled").
const HANDLED_EXTENSIONS: [&str; 10] = [
    "2.5.29.15",         // key usage
    "2.5.29.19",         // basic constraints
    "2.5.29.17",         // subject alternative name
    "2.5.29.30",         // name constraints
    "2.5.29.31",         // CRL distribution points
    "2.5.29.35",         // authority key identifier
    "2.5.29.37",         // extended key usage
    "2.5.29.14",         // subject key identifier
    "2.5.29.32",         // certificate policies
    "1.3.6.1.5.5.7.1.1", // authority information access
];

/// Go's `x509.ExtKeyUsage` constants by OID.
const EXT_KEY_USAGES: [(&str, i64); 14] = [
    ("2.5.29.37.0", 0),
    ("1.3.6.1.5.5.7.3.1", 1),
    ("1.3.6.1.5.5.7.3.2", 2),
    ("1.3.6.1.5.5.7.3.3", 3),
    ("1.3.6.1.5.5.7.3.4", 4),
    ("1.3.6.1.5.5.7.3.5", 5),
    ("1.3.6.1.5.5.7.3.6", 6),
    ("1.3.6.1.5.5.7.3.7", 7),
    ("1.3.6.1.5.5.7.3.8", 8),
    ("1.3.6.1.5.5.7.3.9", 9),
    ("1.3.6.1.4.1.311.10.3.3", 10),
    ("2.16.840.1.113730.4.1", 11),
    ("1.3.6.1.4.1.311.2.1.22", 12),
    ("1.3.6.1.4.1.311.61.1.1", 13),
];

const EKU_ANY: i64 = 0;
const EKU_SERVER_AUTH: i64 = 1;
const EKU_MICROSOFT_SGC: i64 = 10;
const EKU_NETSCAPE_SGC: i64 = 11;

/// The `KeyUsages` option's names (OPA's) for Go's constants.
const KEY_USAGE_NAMES: [(&str, i64); 14] = [
    ("KeyUsageAny", 0),
    ("KeyUsageServerAuth", 1),
    ("KeyUsageClientAuth", 2),
    ("KeyUsageCodeSigning", 3),
    ("KeyUsageEmailProtection", 4),
    ("KeyUsageIPSECEndSystem", 5),
    ("KeyUsageIPSECTunnel", 6),
    ("KeyUsageIPSECUser", 7),
    ("KeyUsageTimeStamping", 8),
    ("KeyUsageOCSPSigning", 9),
    ("KeyUsageMicrosoftServerGatedCrypto", 10),
    ("KeyUsageNetscapeServerGatedCrypto", 11),
    ("KeyUsageMicrosoftCommercialCodeSigning", 12),
    ("KeyUsageMicrosoftKernelCodeSigning", 13),
];

const KEY_USAGE_CERT_SIGN: u16 = 1 << 5;

fn owned_oid(oid: &Oid<'_>) -> Oid<'static> {
    Oid::new(Cow::Owned(oid.as_bytes().to_vec()))
}

fn oid_value(oid: &Oid<'_>) -> Value {
    match oid.iter() {
        Some(arcs) => Value::from(arcs.map(Value::from).collect::<Vec<_>>()),
        // An arc beyond 64 bits: Go could not parse it either.
        None => Value::Null,
    }
}

impl<'a> Extensions<'a> {
    fn parse(extensions: &[X509Extension<'a>]) -> anyhow::Result<Extensions<'a>> {
        let mut out = Extensions::default();
        for ext in extensions {
            let id = ext.oid.to_id_string();
            if ext.critical && !HANDLED_EXTENSIONS.contains(&id.as_str()) {
                out.unhandled_critical.push(owned_oid(&ext.oid));
            }
            match ext.parsed_extension() {
                ParsedExtension::KeyUsage(ku) => out.key_usage = ku.flags,
                ParsedExtension::BasicConstraints(bc) => {
                    out.basic_constraints_valid = true;
                    out.is_ca = bc.ca;
                    out.max_path_len = bc.path_len_constraint.map_or(-1, i64::from);
                    out.max_path_len_zero = bc.path_len_constraint == Some(0);
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    out.has_san = true;
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(s) => out.dns_names.push(s.to_string()),
                            GeneralName::RFC822Name(s) => out.email_addresses.push(s.to_string()),
                            GeneralName::IPAddress(ip) => {
                                if ip.len() != 4 && ip.len() != 16 {
                                    anyhow::bail!(
                                        "x509: cannot parse IP address of length {}",
                                        ip.len()
                                    );
                                }
                                out.ip_addresses.push(ip.to_vec());
                            }
                            GeneralName::URI(s) => out.uris.push(GoUrl::parse(s)?),
                            _ => {}
                        }
                    }
                }
                ParsedExtension::ExtendedKeyUsage(_) => {
                    // Parsed again for the order of the OIDs, which x509-parser does not keep.
                    let (_, oids) = <Vec<Oid> as FromDer<
                        x509_parser::der_parser::asn1_rs::Error,
                    >>::from_der(ext.value)
                    .map_err(|e| anyhow::anyhow!("x509: bad extended key usage: {e}"))?;
                    for oid in oids {
                        let id = oid.to_id_string();
                        match EXT_KEY_USAGES.iter().find(|(o, _)| *o == id) {
                            Some((_, n)) => out.ext_key_usage.push(*n),
                            None => out.unknown_ext_key_usage.push(owned_oid(&oid)),
                        }
                    }
                }
                ParsedExtension::SubjectKeyIdentifier(kid) => out.subject_key_id = Some(kid.0),
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    out.authority_key_id = aki.key_identifier.as_ref().map(|k| k.0);
                }
                ParsedExtension::AuthorityInfoAccess(aia) => {
                    for desc in aia.iter() {
                        let GeneralName::URI(uri) = &desc.access_location else {
                            continue;
                        };
                        match desc.access_method.to_id_string().as_str() {
                            "1.3.6.1.5.5.7.48.1" => out.ocsp_server.push(uri.to_string()),
                            "1.3.6.1.5.5.7.48.2" => {
                                out.issuing_certificate_url.push(uri.to_string())
                            }
                            _ => {}
                        }
                    }
                }
                ParsedExtension::CRLDistributionPoints(points) => {
                    for point in points.iter() {
                        if let Some(DistributionPointName::FullName(names)) =
                            &point.distribution_point
                        {
                            for name in names {
                                if let GeneralName::URI(uri) = name {
                                    out.crl_distribution_points.push(uri.to_string());
                                }
                            }
                        }
                    }
                }
                ParsedExtension::CertificatePolicies(policies) => {
                    for p in policies {
                        out.policy_identifiers.push(owned_oid(&p.policy_id));
                    }
                }
                ParsedExtension::NameConstraints(nc) => {
                    let mut c = Constraints {
                        critical: ext.critical,
                        ..Constraints::default()
                    };
                    let subtrees = [
                        (&nc.permitted_subtrees, true),
                        (&nc.excluded_subtrees, false),
                    ];
                    for (trees, permitted) in subtrees {
                        for tree in trees.iter().flatten() {
                            match &tree.base {
                                GeneralName::DNSName(d) => if permitted {
                                    &mut c.permitted_dns
                                } else {
                                    &mut c.excluded_dns
                                }
                                .push(d.to_string()),
                                GeneralName::RFC822Name(e) => if permitted {
                                    &mut c.permitted_email
                                } else {
                                    &mut c.excluded_email
                                }
                                .push(e.to_string()),
                                GeneralName::URI(u) => if permitted {
                                    &mut c.permitted_uri
                                } else {
                                    &mut c.excluded_uri
                                }
                                .push(u.to_string()),
                                GeneralName::IPAddress(b) => {
                                    if b.len() != 8 && b.len() != 32 {
                                        anyhow::bail!("x509: IP constraint of length {}", b.len());
                                    }
                                    let (ip, mask) = b.split_at(b.len() / 2);
                                    if permitted {
                                        &mut c.permitted_ip
                                    } else {
                                        &mut c.excluded_ip
                                    }
                                    .push((ip.to_vec(), mask.to_vec()))
                                }
                                _ => {}
                            }
                        }
                    }
                    out.name_constraints = Some(c);
                }
                ParsedExtension::ParseError { error }
                    if HANDLED_EXTENSIONS.contains(&id.as_str()) =>
                {
                    anyhow::bail!("x509: malformed extension {id}: {error}");
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

impl<'a> Cert<'a> {
    fn new(raw: &'a [u8], x509: X509Certificate<'a>) -> anyhow::Result<Cert<'a>> {
        let ext = Extensions::parse(x509.tbs_certificate.extensions())?;
        Ok(Cert { raw, x509, ext })
    }

    fn render(&self, uri_strings: bool) -> Value {
        let c = &self.x509;
        let tbs = &c.tbs_certificate;
        let e = &self.ext;
        let mut o = Object::new();
        let mut put = |k: &str, v: Value| {
            o.insert(Value::from(k), v);
        };
        put("Raw", b64(self.raw));
        put("RawTBSCertificate", b64(tbs.as_ref()));
        put("RawSubjectPublicKeyInfo", b64(tbs.subject_pki.raw));
        put("RawSubject", b64(tbs.subject.as_raw()));
        put("RawIssuer", b64(tbs.issuer.as_raw()));
        put("Signature", b64(&c.signature_value.data));
        put(
            "SignatureAlgorithm",
            Value::from(signature_algorithm(&c.signature_algorithm.algorithm)),
        );
        put(
            "PublicKeyAlgorithm",
            Value::from(public_key_algorithm(&tbs.subject_pki)),
        );
        put("PublicKey", public_key(&tbs.subject_pki));
        put("Version", Value::from(u64::from(tbs.version.0) + 1));
        put("SerialNumber", serial_number(c.raw_serial(), &tbs.serial));
        put("Issuer", name(&tbs.issuer));
        put("Subject", name(&tbs.subject));
        put(
            "NotBefore",
            Value::from(rfc3339(tbs.validity.not_before.timestamp())),
        );
        put(
            "NotAfter",
            Value::from(rfc3339(tbs.validity.not_after.timestamp())),
        );
        put("KeyUsage", Value::from(u64::from(e.key_usage)));
        put("Extensions", extensions(tbs.extensions()));
        put("ExtraExtensions", Value::Null);
        put(
            "UnhandledCriticalExtensions",
            oid_list(&e.unhandled_critical),
        );
        put(
            "ExtKeyUsage",
            list(e.ext_key_usage.iter().map(|n| Value::from(*n))),
        );
        put("UnknownExtKeyUsage", oid_list(&e.unknown_ext_key_usage));
        put(
            "BasicConstraintsValid",
            Value::Bool(e.basic_constraints_valid),
        );
        put("IsCA", Value::Bool(e.is_ca));
        put(
            "MaxPathLen",
            Value::from(if e.basic_constraints_valid {
                e.max_path_len
            } else {
                0
            }),
        );
        put("MaxPathLenZero", Value::Bool(e.max_path_len_zero));
        put("SubjectKeyId", e.subject_key_id.map_or(Value::Null, b64));
        put(
            "AuthorityKeyId",
            e.authority_key_id.map_or(Value::Null, b64),
        );
        put("OCSPServer", strings(&e.ocsp_server));
        put("IssuingCertificateURL", strings(&e.issuing_certificate_url));
        self.put_sans(&mut put, uri_strings);
        let nc = e.name_constraints.as_ref();
        let none = Constraints::default();
        let nc_or = nc.unwrap_or(&none);
        put("PermittedDNSDomainsCritical", Value::Bool(nc_or.critical));
        put("PermittedDNSDomains", strings(&nc_or.permitted_dns));
        put("ExcludedDNSDomains", strings(&nc_or.excluded_dns));
        put("PermittedIPRanges", ip_nets(&nc_or.permitted_ip));
        put("ExcludedIPRanges", ip_nets(&nc_or.excluded_ip));
        put("PermittedEmailAddresses", strings(&nc_or.permitted_email));
        put("ExcludedEmailAddresses", strings(&nc_or.excluded_email));
        put("PermittedURIDomains", strings(&nc_or.permitted_uri));
        put("ExcludedURIDomains", strings(&nc_or.excluded_uri));
        put("CRLDistributionPoints", strings(&e.crl_distribution_points));
        put("PolicyIdentifiers", oid_list(&e.policy_identifiers));
        Value::from(o)
    }

    fn put_sans(&self, put: &mut impl FnMut(&str, Value), uri_strings: bool) {
        put_sans(&self.ext, put, uri_strings);
    }

    fn subject_raw(&self) -> &[u8] {
        self.x509.tbs_certificate.subject.as_raw()
    }

    fn issuer_raw(&self) -> &[u8] {
        self.x509.tbs_certificate.issuer.as_raw()
    }
}

fn put_sans(e: &Extensions<'_>, put: &mut impl FnMut(&str, Value), uri_strings: bool) {
    put("DNSNames", strings(&e.dns_names));
    put("EmailAddresses", strings(&e.email_addresses));
    put(
        "IPAddresses",
        list(e.ip_addresses.iter().map(|ip| Value::from(ip_text(ip)))),
    );
    put("URIs", list(e.uris.iter().map(GoUrl::render)));
    if uri_strings {
        put(
            "URIStrings",
            list(e.uris.iter().map(|u| Value::from(u.text.as_str()))),
        );
    }
}

/// A Go list: `null` when empty.
fn list(items: impl Iterator<Item = Value>) -> Value {
    let items: Vec<Value> = items.collect();
    if items.is_empty() {
        Value::Null
    } else {
        Value::from(items)
    }
}

fn strings(items: &[String]) -> Value {
    list(items.iter().map(|s| Value::from(s.as_str())))
}

fn oid_list(items: &[Oid<'_>]) -> Value {
    list(items.iter().map(oid_value))
}

fn ip_nets(nets: &[(Vec<u8>, Vec<u8>)]) -> Value {
    list(nets.iter().map(|(ip, mask)| {
        let mut o = Object::new();
        o.insert(Value::from("IP"), Value::from(ip_text(ip)));
        o.insert(Value::from("Mask"), b64(mask));
        Value::from(o)
    }))
}

/// An IP address as Go's `net.IP.String` writes it.
fn ip_text(ip: &[u8]) -> String {
    match ip.len() {
        4 => Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string(),
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(ip);
            let v6 = Ipv6Addr::from(b);
            match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => v6.to_string(),
            }
        }
        _ => format!("?{}", hex::encode(ip)),
    }
}

fn extensions(exts: &[X509Extension<'_>]) -> Value {
    list(exts.iter().map(|e| {
        let mut o = Object::new();
        o.insert(Value::from("Id"), oid_value(&e.oid));
        o.insert(Value::from("Critical"), Value::Bool(e.critical));
        o.insert(Value::from("Value"), b64(e.value));
        Value::from(o)
    }))
}

/// Go's `pkix.Name` from an RDN sequence.
fn name(n: &X509Name<'_>) -> Value {
    let mut country = Vec::new();
    let mut organization = Vec::new();
    let mut unit = Vec::new();
    let mut locality = Vec::new();
    let mut province = Vec::new();
    let mut street = Vec::new();
    let mut postal = Vec::new();
    let mut serial = String::new();
    let mut common = String::new();
    let mut names = Vec::new();
    for rdn in n.iter() {
        for atv in rdn.iter() {
            let value = attribute_string(atv.attr_value());
            let mut entry = Object::new();
            entry.insert(Value::from("Type"), oid_value(atv.attr_type()));
            entry.insert(
                Value::from("Value"),
                value.as_deref().map_or(Value::Null, Value::from),
            );
            names.push(Value::from(entry));
            let Some(value) = value else { continue };
            match atv.attr_type().to_id_string().as_str() {
                "2.5.4.3" => common = value,
                "2.5.4.5" => serial = value,
                "2.5.4.6" => country.push(value),
                "2.5.4.7" => locality.push(value),
                "2.5.4.8" => province.push(value),
                "2.5.4.9" => street.push(value),
                "2.5.4.10" => organization.push(value),
                "2.5.4.11" => unit.push(value),
                "2.5.4.17" => postal.push(value),
                _ => {}
            }
        }
    }
    let mut o = Object::new();
    let mut put = |k: &str, v: Value| {
        o.insert(Value::from(k), v);
    };
    put("Country", strings(&country));
    put("Organization", strings(&organization));
    put("OrganizationalUnit", strings(&unit));
    put("Locality", strings(&locality));
    put("Province", strings(&province));
    put("StreetAddress", strings(&street));
    put("PostalCode", strings(&postal));
    put("SerialNumber", Value::from(serial));
    put("CommonName", Value::from(common));
    put("Names", list(names.into_iter()));
    put("ExtraNames", Value::Null);
    Value::from(o)
}

/// The value of a string-typed attribute, as Go's ASN.1 decoder would give it.
fn attribute_string(v: &x509_parser::der_parser::asn1_rs::Any<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let data = v.data;
    match v.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::T61String => {
            match std::str::from_utf8(data) {
                Ok(s) => Some(s.to_string()),
                // T61 is Latin-1 in practice, as Go reads it.
                Err(_) => Some(data.iter().map(|b| char::from(*b)).collect()),
            }
        }
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// Go's `x509.SignatureAlgorithm` constant.
fn signature_algorithm(oid: &Oid<'_>) -> u64 {
    match oid.to_id_string().as_str() {
        "1.2.840.113549.1.1.2" => 1,                   // MD2WithRSA
        "1.2.840.113549.1.1.4" => 2,                   // MD5WithRSA
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => 3, // SHA1WithRSA
        "1.2.840.113549.1.1.11" => 4,                  // SHA256WithRSA
        "1.2.840.113549.1.1.12" => 5,                  // SHA384WithRSA
        "1.2.840.113549.1.1.13" => 6,                  // SHA512WithRSA
        "1.2.840.10040.4.3" => 7,                      // DSAWithSHA1
        "2.16.840.1.101.3.4.3.2" => 8,                 // DSAWithSHA256
        "1.2.840.10045.4.1" => 9,                      // ECDSAWithSHA1
        "1.2.840.10045.4.3.2" => 10,                   // ECDSAWithSHA256
        "1.2.840.10045.4.3.3" => 11,                   // ECDSAWithSHA384
        "1.2.840.10045.4.3.4" => 12,                   // ECDSAWithSHA512
        "1.2.840.113549.1.1.10" => 13, // RSASSA-PSS (Go tells hashes apart by parameters)
        "1.3.101.112" => 16,           // PureEd25519
        _ => 0,
    }
}

/// Signature algorithms Go refuses in chains (`InsecureAlgorithmError`).
fn insecure_signature(oid: &Oid<'_>) -> bool {
    matches!(signature_algorithm(oid), 1..=3 | 7 | 9)
}

/// Go's `x509.PublicKeyAlgorithm` constant.
fn public_key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> u64 {
    match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" => 1, // RSA
        "1.2.840.10040.4.1" => 2,    // DSA
        "1.2.840.10045.2.1" => 3,    // ECDSA
        "1.3.101.112" => 4,          // Ed25519
        _ => 0,
    }
}

fn big_unsigned(bytes: &[u8]) -> Value {
    Value::from_numeric_string(&BigUint::from_bytes_be(bytes).to_string()).unwrap_or(Value::Null)
}

fn public_key(spki: &SubjectPublicKeyInfo<'_>) -> Value {
    let mut o = Object::new();
    match (public_key_algorithm(spki), spki.parsed()) {
        (1, Ok(PublicKey::RSA(rsa))) => {
            o.insert(Value::from("N"), big_unsigned(rsa.modulus));
            o.insert(Value::from("E"), big_unsigned(rsa.exponent));
        }
        (3, Ok(PublicKey::EC(point))) => {
            let data = point.data();
            if data.first() != Some(&4) || data.len() % 2 != 1 {
                return Value::Null;
            }
            let (x, y) = data[1..].split_at((data.len() - 1) / 2);
            o.insert(Value::from("Curve"), Value::new_object());
            o.insert(Value::from("X"), big_unsigned(x));
            o.insert(Value::from("Y"), big_unsigned(y));
        }
        (4, _) => return b64(&spki.subject_public_key.data),
        _ => return Value::Null,
    }
    Value::from(o)
}

/// The serial number as a (signed, arbitrarily large) integer, as Go's `big.Int` has it.
fn serial_number(raw: &[u8], unsigned: &BigUint) -> Value {
    let text = if raw.first().is_some_and(|b| b & 0x80 != 0) {
        BigInt::from_signed_bytes_be(raw).to_string()
    } else {
        unsigned.to_string()
    };
    Value::from_numeric_string(&text).unwrap_or(Value::Null)
}

/// Unix seconds as RFC 3339 in UTC (`2006-01-02T15:04:05Z`).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

// ----- Go's url.URL ---------------------------------------------------------------------------

/// A URI split the way Go's `url.Parse` does, for the `URIs` field.
struct GoUrl {
    text: String,
    scheme: String,
    opaque: String,
    has_user: bool,
    host: String,
    path: String,
    raw_path: String,
    omit_host: bool,
    force_query: bool,
    raw_query: String,
    fragment: String,
    raw_fragment: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Path,
    Fragment,
}

fn should_escape(c: u8, mode: Encoding) -> bool {
    if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
        return false;
    }
    if matches!(
        c,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@'
    ) {
        return match mode {
            Encoding::Path => c == b'?',
            Encoding::Fragment => false,
        };
    }
    !(mode == Encoding::Fragment && matches!(c, b'!' | b'(' | b')' | b'*'))
}

fn go_escape(s: &str, mode: Encoding) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if should_escape(b, mode) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

fn go_unescape(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow::anyhow!("invalid URL escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow::anyhow!("URL escape is not UTF-8 in {s:?}"))
}

impl GoUrl {
    fn parse(text: &str) -> anyhow::Result<GoUrl> {
        let mut u = GoUrl {
            text: text.to_string(),
            scheme: String::new(),
            opaque: String::new(),
            has_user: false,
            host: String::new(),
            path: String::new(),
            raw_path: String::new(),
            omit_host: false,
            force_query: false,
            raw_query: String::new(),
            fragment: String::new(),
            raw_fragment: String::new(),
        };
        let (mut rest, frag) = match text.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (text, None),
        };
        if let Some(f) = frag {
            u.fragment = go_unescape(f)?;
            if go_escape(&u.fragment, Encoding::Fragment) != f {
                u.raw_fragment = f.to_string();
            }
        }
        // Scheme: a letter, then letters, digits, `+`, `-`, `.`, up to a colon.
        if let Some(colon) = rest.find(':') {
            let candidate = &rest[..colon];
            let valid = candidate.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphabetic()
                    || (i > 0 && (b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')))
            });
            if colon == 0 {
                anyhow::bail!("x509: cannot parse URI {text:?}: missing protocol scheme");
            }
            if valid {
                u.scheme = candidate.to_ascii_lowercase();
                rest = &rest[colon + 1..];
            }
        }
        if let Some((r, q)) = rest.split_once('?') {
            u.raw_query = q.to_string();
            u.force_query = q.is_empty();
            rest = r;
        }
        if !rest.starts_with('/') && !u.scheme.is_empty() {
            u.opaque = rest.to_string();
            u.text = canonical_text(&u, text);
            return Ok(u);
        }
        if rest.starts_with("//") {
            let authority_end = rest[2..].find('/').map_or(rest.len(), |i| i + 2);
            let authority = &rest[2..authority_end];
            rest = &rest[authority_end..];
            let host = match authority.rfind('@') {
                Some(at) => {
                    u.has_user = true;
                    &authority[at + 1..]
                }
                None => authority,
            };
            u.host = if host.contains('%') {
                go_unescape(host)?
            } else {
                host.to_string()
            };
        } else if !u.scheme.is_empty() && rest.starts_with('/') {
            u.omit_host = true;
        }
        u.path = go_unescape(rest)?;
        if go_escape(&u.path, Encoding::Path) != rest {
            u.raw_path = rest.to_string();
        }
        u.text = canonical_text(&u, text);
        Ok(u)
    }

    fn render(&self) -> Value {
        let mut o = Object::new();
        let mut put = |k: &str, v: Value| {
            o.insert(Value::from(k), v);
        };
        put("Scheme", Value::from(self.scheme.as_str()));
        put("Opaque", Value::from(self.opaque.as_str()));
        put(
            "User",
            if self.has_user {
                Value::new_object()
            } else {
                Value::Null
            },
        );
        put("Host", Value::from(self.host.as_str()));
        put("Path", Value::from(self.path.as_str()));
        put("RawPath", Value::from(self.raw_path.as_str()));
        put("OmitHost", Value::Bool(self.omit_host));
        put("ForceQuery", Value::Bool(self.force_query));
        put("RawQuery", Value::from(self.raw_query.as_str()));
        put("Fragment", Value::from(self.fragment.as_str()));
        put("RawFragment", Value::from(self.raw_fragment.as_str()));
        Value::from(o)
    }
}

/// The URI as Go's `URL.String` gives it: the text as written, with the scheme lowercased.
fn canonical_text(u: &GoUrl, text: &str) -> String {
    if u.scheme.is_empty() {
        return text.to_string();
    }
    format!("{}{}", u.scheme, &text[u.scheme.len()..])
}

// ----- verification ---------------------------------------------------------------------------

/// `[false, []]`.
fn unverified() -> Value {
    Value::from(vec![Value::Bool(false), Value::new_array()])
}

/// Go's `x509.VerifyOptions` as OPA fills them.
#[derive(Default)]
struct VerifyOptions {
    dns_name: Option<String>,
    current_time_ns: Option<i128>,
    key_usages: Vec<i64>,
}

impl VerifyOptions {
    fn from_value(v: &Value) -> anyhow::Result<VerifyOptions> {
        let mut opts = VerifyOptions::default();
        let Value::Object(members) = v else {
            anyhow::bail!("options must be an object");
        };
        for (k, v) in members.iter() {
            let Value::String(k) = k else { continue };
            match k.as_ref() {
                "DNSName" => match v {
                    Value::String(s) => opts.dns_name = Some(s.trim_matches('"').to_string()),
                    _ => anyhow::bail!("'DNSName' should be a string"),
                },
                "CurrentTime" => match v {
                    Value::Number(_) => {
                        let n = v.as_i64().map_err(|_| {
                            anyhow::anyhow!("'CurrentTime' should be a valid int64 number")
                        })?;
                        opts.current_time_ns = Some(i128::from(n));
                    }
                    _ => anyhow::bail!("'CurrentTime' should be a number"),
                },
                "MaxConstraintComparisons" => match v {
                    Value::Number(_) => {
                        v.as_i64().map_err(|_| {
                            anyhow::anyhow!("'MaxConstraintComparisons' should be a valid number")
                        })?;
                    }
                    _ => anyhow::bail!("'MaxConstraintComparisons' should be a number"),
                },
                "KeyUsages" => {
                    let items: Vec<&Value> = match v {
                        Value::Array(a) => a.iter().collect(),
                        Value::Set(s) => s.iter().collect(),
                        _ => anyhow::bail!("'KeyUsages' should be an Array or Set"),
                    };
                    let mut invalid = Vec::new();
                    for item in items {
                        let Value::String(s) = item else { continue };
                        let s = s.trim_matches('"');
                        match KEY_USAGE_NAMES.iter().find(|(n, _)| *n == s) {
                            Some((_, u)) => opts.key_usages.push(*u),
                            None => invalid.push(s.to_string()),
                        }
                    }
                    if !invalid.is_empty() {
                        anyhow::bail!("invalid entries for 'KeyUsages' found: {invalid:?}");
                    }
                }
                _ => anyhow::bail!("invalid key option"),
            }
        }
        Ok(opts)
    }
}

fn parse_and_verify(input: &str, opts: &VerifyOptions, uri_strings: bool) -> Value {
    let Ok(der) = certificates_der(input) else {
        return unverified();
    };
    let Ok(certs) = parse_all(&der) else {
        return unverified();
    };
    match verify_chain(&certs, opts) {
        Some(chain) => Value::from(vec![
            Value::Bool(true),
            Value::from(
                chain
                    .iter()
                    .map(|i| certs[*i].render(uri_strings))
                    .collect::<Vec<_>>(),
            ),
        ]),
        None => unverified(),
    }
}

/// Go's limit on signature checks while building chains.
const MAX_SIGNATURE_CHECKS: usize = 100;

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Leaf,
    Intermediate,
    Root,
}

struct Builder<'c, 'a> {
    certs: &'c [Cert<'a>],
    now_ns: i128,
    signature_checks: usize,
}

/// The verified chain as indices into `certs`, leaf first; `None` when no chain verifies.
fn verify_chain(certs: &[Cert<'_>], opts: &VerifyOptions) -> Option<Vec<usize>> {
    if certs.len() < 2 {
        return None;
    }
    let leaf = certs.len() - 1;
    let mut b = Builder {
        certs,
        now_ns: opts.current_time_ns.unwrap_or_else(now_ns),
        signature_checks: 0,
    };
    if !b.valid(leaf, Role::Leaf, &[]) {
        return None;
    }
    if let Some(host) = &opts.dns_name {
        if !verify_hostname(&certs[leaf], host) {
            return None;
        }
    }
    let chains = if certs[leaf].raw == certs[0].raw {
        vec![vec![leaf]]
    } else {
        let mut chains = Vec::new();
        b.build(&mut vec![leaf], &mut chains);
        chains
    };
    let mut usages = opts.key_usages.clone();
    if usages.is_empty() {
        usages.push(EKU_SERVER_AUTH);
    }
    if usages.contains(&EKU_ANY) {
        return chains.into_iter().next();
    }
    chains
        .into_iter()
        .find(|chain| chain_allows_usages(certs, chain, &usages))
}

impl Builder<'_, '_> {
    fn build(&mut self, chain: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        let Some(&child) = chain.last() else { return };
        let last = self.certs.len() - 1;
        // The root first, then the intermediates (certs 1 .. last-1).
        let candidates =
            std::iter::once((0, Role::Root)).chain((1..last).map(|i| (i, Role::Intermediate)));
        for (parent, role) in candidates {
            if self.certs[parent].subject_raw() != self.certs[child].issuer_raw() {
                continue;
            }
            if chain.iter().any(|c| self.same_certificate(*c, parent)) {
                continue;
            }
            self.signature_checks += 1;
            if self.signature_checks > MAX_SIGNATURE_CHECKS {
                return;
            }
            if !self.signed_by(child, parent) || !self.valid(parent, role, chain) {
                continue;
            }
            chain.push(parent);
            match role {
                Role::Root => out.push(chain.clone()),
                _ => self.build(chain, out),
            }
            chain.pop();
        }
    }

    fn same_certificate(&self, a: usize, b: usize) -> bool {
        let (a, b) = (&self.certs[a], &self.certs[b]);
        a.raw == b.raw
            || (a.subject_raw() == b.subject_raw()
                && a.x509.tbs_certificate.subject_pki.raw == b.x509.tbs_certificate.subject_pki.raw)
    }

    /// Go's `CheckSignatureFrom`: the parent may sign certificates, and its key signed `child`.
    fn signed_by(&self, child: usize, parent: usize) -> bool {
        let (c, p) = (&self.certs[child], &self.certs[parent]);
        let v3 = p.x509.tbs_certificate.version.0 == 2;
        if (v3 && !p.ext.basic_constraints_valid) || (p.ext.basic_constraints_valid && !p.ext.is_ca)
        {
            return false;
        }
        if p.ext.key_usage != 0 && p.ext.key_usage & KEY_USAGE_CERT_SIGN == 0 {
            return false;
        }
        if insecure_signature(&c.x509.signature_algorithm.algorithm) {
            return false;
        }
        c.x509
            .verify_signature(Some(&p.x509.tbs_certificate.subject_pki))
            .is_ok()
    }

    /// Go's `isValid`: validity period, name constraints, CA flag and path length.
    fn valid(&self, i: usize, role: Role, chain: &[usize]) -> bool {
        let c = &self.certs[i];
        let validity = &c.x509.tbs_certificate.validity;
        let not_before = i128::from(validity.not_before.timestamp()) * 1_000_000_000;
        let not_after = i128::from(validity.not_after.timestamp()) * 1_000_000_000;
        if self.now_ns < not_before || self.now_ns > not_after {
            return false;
        }
        if role == Role::Leaf {
            return c.ext.unhandled_critical.is_empty();
        }
        if let Some(nc) = &c.ext.name_constraints {
            for below in chain {
                let e = &self.certs[*below].ext;
                if e.has_san && !names_allowed(nc, e) {
                    return false;
                }
            }
        }
        if role == Role::Intermediate && (!c.ext.basic_constraints_valid || !c.ext.is_ca) {
            return false;
        }
        if c.ext.basic_constraints_valid && c.ext.max_path_len >= 0 {
            let intermediates = chain.len().saturating_sub(1);
            if intermediates as i64 > c.ext.max_path_len {
                return false;
            }
        }
        true
    }
}

/// Go's `checkChainForKeyUsage`: every certificate with extended key usage keeps at least one
/// requested usage alive.
fn chain_allows_usages(certs: &[Cert<'_>], chain: &[usize], requested: &[i64]) -> bool {
    let mut alive: Vec<Option<i64>> = requested.iter().copied().map(Some).collect();
    let mut remaining = alive.len();
    for i in chain.iter().rev() {
        let e = &certs[*i].ext;
        if e.ext_key_usage.is_empty() && e.unknown_ext_key_usage.is_empty() {
            continue;
        }
        if e.ext_key_usage.contains(&EKU_ANY) {
            continue;
        }
        for slot in alive.iter_mut() {
            let Some(want) = *slot else { continue };
            let ok = e.ext_key_usage.iter().any(|u| {
                *u == want
                    || (want == EKU_SERVER_AUTH
                        && (*u == EKU_NETSCAPE_SGC || *u == EKU_MICROSOFT_SGC))
            });
            if !ok {
                *slot = None;
                remaining -= 1;
                if remaining == 0 {
                    return false;
                }
            }
        }
    }
    true
}

/// The reversed labels of a domain name, or `None` when it is not one (Go's
/// `domainToReverseLabels`).
fn reverse_labels(domain: &str) -> Option<Vec<String>> {
    let mut labels = Vec::new();
    let mut rest = domain;
    while !rest.is_empty() {
        match rest.rfind('.') {
            Some(i) => {
                labels.push(rest[i + 1..].to_string());
                rest = &rest[..i];
                if i == 0 {
                    labels.push(String::new());
                }
            }
            None => {
                labels.push(rest.to_string());
                rest = "";
            }
        }
    }
    if labels.iter().any(|l| l.is_empty() || !l.is_ascii()) {
        return None;
    }
    Some(labels)
}

/// Go's `matchDomainConstraint`.
fn domain_matches(domain: &str, constraint: &str) -> Option<bool> {
    if constraint.is_empty() {
        return Some(true);
    }
    let domain_labels = reverse_labels(domain)?;
    let (must_have_sub, constraint) = match constraint.strip_prefix('.') {
        Some(c) => (true, c),
        None => (false, constraint),
    };
    let constraint_labels = reverse_labels(constraint)?;
    if domain_labels.len() < constraint_labels.len()
        || (must_have_sub && domain_labels.len() == constraint_labels.len())
    {
        return Some(false);
    }
    Some(
        constraint_labels
            .iter()
            .zip(&domain_labels)
            .all(|(c, d)| c.eq_ignore_ascii_case(d)),
    )
}

fn email_matches(mailbox: &str, constraint: &str) -> Option<bool> {
    let (local, domain) = mailbox.rsplit_once('@')?;
    if let Some((c_local, c_domain)) = constraint.rsplit_once('@') {
        return Some(local == c_local && domain.eq_ignore_ascii_case(c_domain));
    }
    domain_matches(domain, constraint)
}

fn ip_matches(ip: &[u8], (net, mask): &(Vec<u8>, Vec<u8>)) -> bool {
    ip.len() == net.len()
        && mask.len() == net.len()
        && ip
            .iter()
            .zip(net)
            .zip(mask)
            .all(|((a, n), m)| a & m == n & m)
}

fn uri_matches(u: &GoUrl, constraint: &str) -> Option<bool> {
    let mut host = u.host.as_str();
    if host.is_empty() {
        return None;
    }
    if let Some((h, port)) = host.rsplit_once(':') {
        if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) {
            host = h;
        }
    }
    if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    domain_matches(host, constraint)
}

/// Go's `checkNameConstraints` for one kind of name: not excluded, and permitted when any
/// permission is listed. A name that cannot be compared fails.
fn constrained<N: ?Sized, C>(
    name: &N,
    permitted: &[C],
    excluded: &[C],
    matches: impl Fn(&N, &C) -> Option<bool>,
) -> bool {
    for c in excluded {
        match matches(name, c) {
            Some(false) => {}
            _ => return false,
        }
    }
    if permitted.is_empty() {
        return true;
    }
    for c in permitted {
        match matches(name, c) {
            Some(true) => return true,
            Some(false) => {}
            None => return false,
        }
    }
    false
}

fn names_allowed(nc: &Constraints, e: &Extensions<'_>) -> bool {
    e.dns_names.iter().all(|d| {
        constrained(d.as_str(), &nc.permitted_dns, &nc.excluded_dns, |n, c| {
            domain_matches(n, c)
        })
    }) && e.email_addresses.iter().all(|m| {
        constrained(
            m.as_str(),
            &nc.permitted_email,
            &nc.excluded_email,
            |n, c| email_matches(n, c),
        )
    }) && e.ip_addresses.iter().all(|ip| {
        constrained(ip.as_slice(), &nc.permitted_ip, &nc.excluded_ip, |n, c| {
            Some(ip_matches(n, c))
        })
    }) && e.uris.iter().all(|u| {
        constrained(u, &nc.permitted_uri, &nc.excluded_uri, |n, c| {
            uri_matches(n, c)
        })
    })
}

/// Go's `VerifyHostname` on the leaf: an IP address against its IP SANs, a name against its
/// DNS SANs (a wildcard only as the whole leftmost label).
fn verify_hostname(leaf: &Cert<'_>, host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        let want: Vec<u8> = match ip {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        return leaf.ext.ip_addresses.iter().any(|candidate| {
            candidate == &want
                || (candidate.len() == 16
                    && want.len() == 4
                    && candidate[12..] == want[..]
                    && candidate[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff])
        });
    }
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    leaf.ext.dns_names.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        let pattern = pattern.strip_suffix('.').unwrap_or(&pattern);
        if pattern.is_empty() || host.is_empty() {
            return false;
        }
        let p: Vec<&str> = pattern.split('.').collect();
        let h: Vec<&str> = host.split('.').collect();
        p.len() == h.len()
            && p.iter()
                .zip(&h)
                .enumerate()
                .all(|(i, (p, h))| (i == 0 && *p == "*") || p == h)
    })
}

// ----- certificate requests -------------------------------------------------------------------

fn parse_certificate_request(input: &str) -> anyhow::Result<Value> {
    let bytes = if input.starts_with("-----BEGIN CERTIFICATE REQUEST-----") {
        input.as_bytes().to_vec()
    } else {
        GO_STD_BASE64
            .decode(input)
            .map_err(|e| anyhow::anyhow!("input is neither PEM nor base64: {e}"))?
    };
    let der = if bytes.starts_with(b"-----BEGIN") {
        let block = pem::parse(&bytes).map_err(|e| anyhow::anyhow!("bad PEM: {e}"))?;
        if block.tag() != "CERTIFICATE REQUEST" {
            anyhow::bail!("invalid PEM-encoded certificate signing request");
        }
        block.into_contents()
    } else {
        bytes
    };
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| anyhow::anyhow!("x509: malformed certificate request: {e}"))?;
    let raw = &der[..der.len() - rest.len()];
    let info = &csr.certification_request_info;
    let requested: Vec<X509Extension<'_>> = info
        .iter_attributes()
        .find_map(|a| match a.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(r) => Some(r.extensions.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let ext = Extensions::parse(&requested)?;

    let mut o = Object::new();
    let mut put = |k: &str, v: Value| {
        o.insert(Value::from(k), v);
    };
    put("Raw", b64(raw));
    put("RawTBSCertificateRequest", b64(info.raw));
    put("RawSubjectPublicKeyInfo", b64(info.subject_pki.raw));
    put("RawSubject", b64(info.subject.as_raw()));
    put("Version", Value::from(u64::from(info.version.0)));
    put("Signature", b64(&csr.signature_value.data));
    put(
        "SignatureAlgorithm",
        Value::from(signature_algorithm(&csr.signature_algorithm.algorithm)),
    );
    put(
        "PublicKeyAlgorithm",
        Value::from(public_key_algorithm(&info.subject_pki)),
    );
    put("PublicKey", public_key(&info.subject_pki));
    put("Subject", name(&info.subject));
    put("Extensions", extensions(&requested));
    put("ExtraExtensions", Value::Null);
    put_sans(&ext, &mut put, false);
    Ok(Value::from(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_594_396_830), "2020-07-10T16:00:30Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn urls_split_like_go() {
        let u = GoUrl::parse("spiffe://example.com/ns/default/sa/web").unwrap();
        assert_eq!(
            (
                u.scheme.as_str(),
                u.host.as_str(),
                u.path.as_str(),
                u.raw_path.as_str()
            ),
            ("spiffe", "example.com", "/ns/default/sa/web", "")
        );
        let u = GoUrl::parse("mailto:someone@example.com").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.opaque.as_str()),
            ("mailto", "someone@example.com")
        );
        let u = GoUrl::parse("https://user@h:8443/a%2Fb?x=1#frag%21").unwrap();
        assert!(u.has_user);
        assert_eq!(u.host, "h:8443");
        assert_eq!((u.path.as_str(), u.raw_path.as_str()), ("/a/b", "/a%2Fb"));
        assert_eq!(u.raw_query, "x=1");
        assert_eq!(
            (u.fragment.as_str(), u.raw_fragment.as_str()),
            ("frag!", "frag%21")
        );
        let u = GoUrl::parse("file:/etc/hosts").unwrap();
        assert!(u.omit_host);
        assert!(GoUrl::parse("https://h/%zz").is_err());
    }

    #[test]
    fn domain_constraints_like_go() {
        assert_eq!(domain_matches("a.example.com", "example.com"), Some(true));
        assert_eq!(domain_matches("example.com", "example.com"), Some(true));
        assert_eq!(domain_matches("example.com", ".example.com"), Some(false));
        assert_eq!(domain_matches("a.example.com", ".example.com"), Some(true));
        assert_eq!(domain_matches("badexample.com", "example.com"), Some(false));
        assert_eq!(domain_matches("x.com", ""), Some(true));
        assert_eq!(email_matches("u@a.example.com", "example.com"), Some(true));
        assert_eq!(email_matches("u@example.com", "v@example.com"), Some(false));
    }

    #[test]
    fn ipv4_mapped_addresses_print_as_ipv4() {
        let mut mapped = vec![0u8; 10];
        mapped.extend_from_slice(&[0xff, 0xff, 10, 0, 0, 1]);
        assert_eq!(ip_text(&mapped), "10.0.0.1");
        assert_eq!(ip_text(&Ipv6Addr::LOCALHOST.octets()), "::1");
    }
}
