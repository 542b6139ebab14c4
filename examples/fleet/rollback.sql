// Back to the previous version of the model on every US device, then check what runs where.
rollback model 'vib-anomaly' on Edge e where region(e) = 'US';
select id(e), model_version(e, 'vib-anomaly') from Edge e where region(e) = 'US' order by id(e);

// And off the dumpers altogether.
undeploy model 'vib-anomaly' from Edge e where kind(e) = 'dumper';
