//! Microsoft's clouds and their names (Learn: "Microsoft Graph national cloud
//! deployments"; Exchange Online's OAuth resources per environment): the Entra login
//! host, the Graph host, the SMTP AUTH host, and the resources tokens are requested
//! for. Each cloud is its own world — an app, a tenant or a token of one is unknown
//! to another — so every name mailbridge uses comes from one configured cloud
//! (`MAILBRIDGE_M365_CLOUD`), and the simulator answers as one of them.

use std::str::FromStr;

use strum::VariantArray;

/// One of Microsoft's clouds.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::VariantArray,
)]
#[strum(serialize_all = "lowercase")]
pub enum Cloud {
    /// The global service (commercial and GCC).
    #[default]
    Public,
    /// Microsoft Cloud for US Government: GCC High.
    #[strum(serialize = "usgov-high")]
    UsGovHigh,
    /// Microsoft 365 operated by 21Vianet in China.
    China,
}

impl Cloud {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The Entra ID endpoint (tokens, admin consent).
    pub fn login_url(self) -> &'static str {
        match self {
            Self::Public => "https://login.microsoftonline.com",
            Self::UsGovHigh => "https://login.microsoftonline.us",
            Self::China => "https://login.chinacloudapi.cn",
        }
    }

    /// Microsoft Graph's service root, also the resource Graph tokens are for.
    pub fn graph_url(self) -> &'static str {
        match self {
            Self::Public => "https://graph.microsoft.com",
            Self::UsGovHigh => "https://graph.microsoft.us",
            Self::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// Exchange Online's resource: SMTP AUTH tokens are for `{this}/.default`.
    pub fn exchange_resource(self) -> &'static str {
        match self {
            Self::Public => "https://outlook.office365.com",
            Self::UsGovHigh => "https://outlook.office365.us",
            Self::China => "https://partner.outlook.cn",
        }
    }

    /// Exchange Online's SMTP AUTH submission endpoint.
    pub fn smtp_endpoint(self) -> &'static str {
        match self {
            Self::Public => "smtp.office365.com:587",
            Self::UsGovHigh => "smtp.office365.us:587",
            Self::China => "smtp.partner.outlook.cn:587",
        }
    }

    /// The cloud whose Graph or Exchange resource `resource` is, if any.
    pub fn of_resource(resource: &str) -> Option<Self> {
        let resource = resource.trim_end_matches('/');
        Self::VARIANTS
            .iter()
            .copied()
            .find(|c| c.graph_url() == resource || c.exchange_resource() == resource)
    }
}

impl FromStr for Cloud {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "public" | "global" | "commercial" => Ok(Self::Public),
            "usgov-high" | "gcc-high" | "usgovhigh" => Ok(Self::UsGovHigh),
            "china" | "21vianet" => Ok(Self::China),
            other => Err(format!(
                "unknown cloud {other:?}: public, usgov-high (GCC High) or china (21Vianet)"
            )),
        }
    }
}

impl std::fmt::Display for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_resources_name_their_cloud() {
        assert_eq!("GCC-High".parse::<Cloud>(), Ok(Cloud::UsGovHigh));
        assert_eq!("china".parse::<Cloud>(), Ok(Cloud::China));
        assert!("mars".parse::<Cloud>().is_err());
        assert_eq!(
            Cloud::of_resource("https://outlook.office365.us/"),
            Some(Cloud::UsGovHigh)
        );
        assert_eq!(
            Cloud::of_resource("https://graph.microsoft.com"),
            Some(Cloud::Public)
        );
        assert_eq!(Cloud::of_resource("https://example.com"), None);
    }
}
