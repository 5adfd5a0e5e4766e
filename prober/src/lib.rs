//! geolb-prober: health-checks CDN nodes and gossips verdicts (work in progress: see issue 3).
