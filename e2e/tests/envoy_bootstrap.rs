//! The rendered Envoy bootstraps pass `envoy --mode validate`, and validation really catches a
//! broken bootstrap (so a template typo fails here, not as a timeout in a scenario).

mod common;

use anyhow::Result;
use regent_e2e::envoy::{bootstrap, validate, EnvoyOptions};

#[test]
fn rendered_bootstraps_validate_and_a_typo_is_caught() -> Result<()> {
    let mut h = common::harness("envoy_bootstrap")?;
    for allow in [false, true] {
        let mut opts = EnvoyOptions::free(9191, 8080, 50051)?;
        opts.failure_mode_allow = allow;
        let text = bootstrap(&opts)?;
        let file = h.write(&format!("envoy-{allow}.yaml"), &text)?;
        validate(&h.bins.envoy, &file)?;

        let typo = text.replace(
            "failure_mode_allow_header_add",
            "failure_mode_alow_header_add",
        );
        assert_ne!(typo, text);
        let file = h.write(&format!("envoy-typo-{allow}.yaml"), typo)?;
        let err = validate(&h.bins.envoy, &file).unwrap_err().to_string();
        assert!(err.contains("failure_mode_alow_header_add"), "{err}");
    }
    h.pass();
    Ok(())
}
