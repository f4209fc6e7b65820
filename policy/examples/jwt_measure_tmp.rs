// THROWAWAY measurement harness (not to be committed).
use base64::Engine as _;
use regorus::Value;

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
}
const FIX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../sidecar/tests/fixtures/jwt/"
);
fn fx(n: &str) -> String {
    std::fs::read_to_string(format!("{FIX}{n}")).unwrap()
}

fn token(n: u64) -> String {
    let der = pem::parse(fx("rsa_private.pem")).unwrap().into_contents();
    let kp = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#),
        b64(format!(r#"{{"sub":"alice","n":{n},"iss":"https://issuer.example","aud":"orders","exp":1700003600}}"#).as_bytes())
    );
    let mut sig = vec![0; kp.public().modulus_len()];
    kp.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", b64(&sig))
}

#[inline(never)]
fn measured(args: &[Value]) -> Value {
    regent_policy::builtins::call("io.jwt.decode_verify", args)
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "pem".into());
    let same = std::env::args().nth(2).as_deref() == Some("same");
    let n: u64 = std::env::args().nth(3).map_or(4, |s| s.parse().unwrap());
    let cert = if mode == "jwks" {
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::traits::PublicKeyParts as _;
        let k = rsa::RsaPublicKey::from_public_key_pem(&fx("rsa_public.pem")).unwrap();
        let k2 = rsa::RsaPublicKey::from_public_key_pem(&fx("rsa2_public.pem")).unwrap();
        serde_json::json!({"keys": [
            {"kty":"RSA","kid":"k2","n": b64(&k2.n().to_bytes_be()),"e": b64(&k2.e().to_bytes_be())},
            {"kty":"RSA","kid":"k1","n": b64(&k.n().to_bytes_be()),"e": b64(&k.e().to_bytes_be())}]}).to_string()
    } else {
        fx("rsa_public.pem")
    };
    let tokens: Vec<String> = (0..n).map(|i| token(if same { 0 } else { i })).collect();
    let mut c = std::collections::BTreeMap::new();
    c.insert(Value::from("cert"), Value::from(cert.as_str()));
    c.insert(Value::from("iss"), Value::from("https://issuer.example"));
    c.insert(Value::from("aud"), Value::from("orders"));
    c.insert(
        Value::from("time"),
        Value::from(1_700_000_000_000_000_000i128 as f64),
    );
    let constraints = Value::from(c);
    for t in &tokens {
        // A fresh cert string per call, as `json.marshal(data.jwks)` makes one per evaluation.
        let mut cc = constraints.clone();
        if let Value::Object(o) = &mut cc {
            std::sync::Arc::make_mut(o)
                .insert(Value::from("cert"), Value::from(cert.clone().as_str()));
        }
        let v = measured(&[Value::from(t.as_str()), cc]);
        assert_eq!(v[0], Value::Bool(true));
    }
    println!("ok");
}
