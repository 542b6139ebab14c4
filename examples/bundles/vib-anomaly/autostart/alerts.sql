// Runs on the device from the moment the bundle is installed, online or not: every anomalous
// window, with its time and score, for the federation.
select stream of ts(now(), s) from Real s where s in vib_anomaly_level() and s > 0;
