#!/bin/sh
# botocore (installed from PyPI into the image) reads the instance id and
# the availability zone through its own IMDS client, the code every AWS
# SDK for Python uses: IMDSFetcher gets an IMDSv2 token (PUT
# /latest/api/token), then GETs with it. With http-tokens=required a
# client that fell back to IMDSv1 would get 401 and no answer.
exec python3 - <<'PYTHON'
import botocore
from botocore.utils import IMDSFetcher, InstanceMetadataRegionFetcher


class Fetcher(IMDSFetcher):
    def get(self, path):
        token = self._fetch_metadata_token()
        print("INFO botocore_token=" + ("yes" if token else "no"))
        response = self._get_request(path, None, token)
        return response.text


print("INFO botocore_version=" + botocore.__version__)
fetcher = Fetcher(timeout=5, num_attempts=3)
print("INFO botocore_instance_id=" + fetcher.get("latest/meta-data/instance-id"))
zone = fetcher.get("latest/meta-data/placement/availability-zone")
print("INFO botocore_availability_zone=" + zone)
region = InstanceMetadataRegionFetcher(timeout=5, num_attempts=3).retrieve_region()
print("INFO botocore_region=" + str(region))
PYTHON
