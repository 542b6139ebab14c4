// Deploy the vibration anomaly model to the equipment in the US, then to wheel loaders and dumpers
// in the US, EU and AU that vibrate right now. Devices the bundle does not fit are skipped, with
// the reason; each device gets the best variant it can run.
deploy model 'vib-anomaly' version '1.1.0' to Edge e where region(e) = 'US';
deploy model 'vib-anomaly' version '1.2.0' to Edge e where region(e) = 'US';

deploy model 'vib-anomaly' version '1.2.0'
  to Edge e where region(e) in ('US', 'EU', 'AU') and kind(e) in ('wheel loader', 'dumper')
                 and abs(signal_value('vibration'))@e > 0.2;

select id(e), region(e), kind(e), model_version(e, 'vib-anomaly') from Edge e
 where model_version(e, 'vib-anomaly') is not null order by id(e);

// The deployed function runs on the devices: their anomaly scores, as windows complete.
select stream of id(e), s from Edge e, Real s
 where region(e) = 'US' and s in vib_anomaly_level()@e limit 6;
