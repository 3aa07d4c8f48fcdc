"""Push providers (Web Push, FCM HTTP v1, APNs) and the per-device delivery."""
