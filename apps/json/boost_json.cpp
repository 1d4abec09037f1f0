// Boost.JSON's implementation, compiled in this one translation unit (its header-only mode):
// Debian's libboost1.81-dev ships the headers without a built libboost_json.
#include <boost/json/src.hpp>
